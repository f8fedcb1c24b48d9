# ruff: noqa
# fmt: off
# Generated from proto/samsem/v1/samsem.proto by `python -m samsem.server.protogen`.
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_QUEUED: _ClassVar[JobState]
    JOB_RUNNING: _ClassVar[JobState]
    JOB_SUCCEEDED: _ClassVar[JobState]
    JOB_FAILED: _ClassVar[JobState]
    JOB_CANCELLED: _ClassVar[JobState]

class FileState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FILE_STATE_UNSPECIFIED: _ClassVar[FileState]
    FILE_PENDING: _ClassVar[FileState]
    FILE_RUNNING: _ClassVar[FileState]
    FILE_DONE: _ClassVar[FileState]
    FILE_SKIPPED: _ClassVar[FileState]
    FILE_FAILED: _ClassVar[FileState]
    FILE_CANCELLED: _ClassVar[FileState]
JOB_STATE_UNSPECIFIED: JobState
JOB_QUEUED: JobState
JOB_RUNNING: JobState
JOB_SUCCEEDED: JobState
JOB_FAILED: JobState
JOB_CANCELLED: JobState
FILE_STATE_UNSPECIFIED: FileState
FILE_PENDING: FileState
FILE_RUNNING: FileState
FILE_DONE: FileState
FILE_SKIPPED: FileState
FILE_FAILED: FileState
FILE_CANCELLED: FileState

class RawLayout(_message.Message):
    __slots__ = ("dtype", "height", "width")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    height: int
    width: int
    def __init__(self, dtype: _Optional[str] = ..., height: _Optional[int] = ..., width: _Optional[int] = ...) -> None: ...

class EncodedLayout(_message.Message):
    __slots__ = ("format", "size")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    format: str
    size: int
    def __init__(self, format: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class ImageHeader(_message.Message):
    __slots__ = ("name", "raw", "encoded", "options", "vector")
    class OptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    name: str
    raw: RawLayout
    encoded: EncodedLayout
    options: _containers.ScalarMap[str, str]
    vector: VectorRequest
    def __init__(self, name: _Optional[str] = ..., raw: _Optional[_Union[RawLayout, _Mapping]] = ..., encoded: _Optional[_Union[EncodedLayout, _Mapping]] = ..., options: _Optional[_Mapping[str, str]] = ..., vector: _Optional[_Union[VectorRequest, _Mapping]] = ...) -> None: ...

class VectorRequest(_message.Message):
    __slots__ = ("formats", "tolerance_px", "nm_per_px", "gds_layer", "gds_datatype")
    FORMATS_FIELD_NUMBER: _ClassVar[int]
    TOLERANCE_PX_FIELD_NUMBER: _ClassVar[int]
    NM_PER_PX_FIELD_NUMBER: _ClassVar[int]
    GDS_LAYER_FIELD_NUMBER: _ClassVar[int]
    GDS_DATATYPE_FIELD_NUMBER: _ClassVar[int]
    formats: _containers.RepeatedScalarFieldContainer[str]
    tolerance_px: float
    nm_per_px: float
    gds_layer: int
    gds_datatype: int
    def __init__(self, formats: _Optional[_Iterable[str]] = ..., tolerance_px: _Optional[float] = ..., nm_per_px: _Optional[float] = ..., gds_layer: _Optional[int] = ..., gds_datatype: _Optional[int] = ...) -> None: ...

class VectorChunk(_message.Message):
    __slots__ = ("format", "offset", "length", "zlib_data", "last")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    ZLIB_DATA_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    format: str
    offset: int
    length: int
    zlib_data: bytes
    last: bool
    def __init__(self, format: _Optional[str] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ..., zlib_data: _Optional[bytes] = ..., last: _Optional[bool] = ...) -> None: ...

class SegmentRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: ImageHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[ImageHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("tiles_done", "tiles_total")
    TILES_DONE_FIELD_NUMBER: _ClassVar[int]
    TILES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    tiles_done: int
    tiles_total: int
    def __init__(self, tiles_done: _Optional[int] = ..., tiles_total: _Optional[int] = ...) -> None: ...

class MaskChunk(_message.Message):
    __slots__ = ("height", "width", "offset", "length", "zlib_data")
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    ZLIB_DATA_FIELD_NUMBER: _ClassVar[int]
    height: int
    width: int
    offset: int
    length: int
    zlib_data: bytes
    def __init__(self, height: _Optional[int] = ..., width: _Optional[int] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ..., zlib_data: _Optional[bytes] = ...) -> None: ...

class SegmentReport(_message.Message):
    __slots__ = ("name", "height", "width", "report_json", "request_id", "queue_seconds", "compute_seconds", "report_streamed")
    NAME_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    REPORT_JSON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    QUEUE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REPORT_STREAMED_FIELD_NUMBER: _ClassVar[int]
    name: str
    height: int
    width: int
    report_json: str
    request_id: str
    queue_seconds: float
    compute_seconds: float
    report_streamed: bool
    def __init__(self, name: _Optional[str] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., report_json: _Optional[str] = ..., request_id: _Optional[str] = ..., queue_seconds: _Optional[float] = ..., compute_seconds: _Optional[float] = ..., report_streamed: _Optional[bool] = ...) -> None: ...

class SegmentResponse(_message.Message):
    __slots__ = ("progress", "mask", "report", "vector", "report_part")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    REPORT_PART_FIELD_NUMBER: _ClassVar[int]
    progress: Progress
    mask: MaskChunk
    report: SegmentReport
    vector: VectorChunk
    report_part: bytes
    def __init__(self, progress: _Optional[_Union[Progress, _Mapping]] = ..., mask: _Optional[_Union[MaskChunk, _Mapping]] = ..., report: _Optional[_Union[SegmentReport, _Mapping]] = ..., vector: _Optional[_Union[VectorChunk, _Mapping]] = ..., report_part: _Optional[bytes] = ...) -> None: ...

class SegmentTileRequest(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: ImageHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[ImageHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class SegmentTileResponse(_message.Message):
    __slots__ = ("mask", "report")
    MASK_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    mask: MaskChunk
    report: SegmentReport
    def __init__(self, mask: _Optional[_Union[MaskChunk, _Mapping]] = ..., report: _Optional[_Union[SegmentReport, _Mapping]] = ...) -> None: ...

class SubmitJobRequest(_message.Message):
    __slots__ = ("inputs", "options", "overwrite", "vector")
    class OptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    OVERWRITE_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    inputs: _containers.RepeatedScalarFieldContainer[str]
    options: _containers.ScalarMap[str, str]
    overwrite: bool
    vector: VectorRequest
    def __init__(self, inputs: _Optional[_Iterable[str]] = ..., options: _Optional[_Mapping[str, str]] = ..., overwrite: _Optional[bool] = ..., vector: _Optional[_Union[VectorRequest, _Mapping]] = ...) -> None: ...

class JobRef(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class FileStatus(_message.Message):
    __slots__ = ("input", "state", "mask_path", "report_path", "error", "code", "vector_paths")
    INPUT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MASK_PATH_FIELD_NUMBER: _ClassVar[int]
    REPORT_PATH_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    VECTOR_PATHS_FIELD_NUMBER: _ClassVar[int]
    input: str
    state: FileState
    mask_path: str
    report_path: str
    error: str
    code: str
    vector_paths: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, input: _Optional[str] = ..., state: _Optional[_Union[FileState, str]] = ..., mask_path: _Optional[str] = ..., report_path: _Optional[str] = ..., error: _Optional[str] = ..., code: _Optional[str] = ..., vector_paths: _Optional[_Iterable[str]] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "state", "files", "tiles_done", "tiles_total", "created_unix", "started_unix", "finished_unix", "error", "file_count")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    TILES_DONE_FIELD_NUMBER: _ClassVar[int]
    TILES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_FIELD_NUMBER: _ClassVar[int]
    FINISHED_UNIX_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    FILE_COUNT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: JobState
    files: _containers.RepeatedCompositeFieldContainer[FileStatus]
    tiles_done: int
    tiles_total: int
    created_unix: float
    started_unix: float
    finished_unix: float
    error: str
    file_count: int
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., files: _Optional[_Iterable[_Union[FileStatus, _Mapping]]] = ..., tiles_done: _Optional[int] = ..., tiles_total: _Optional[int] = ..., created_unix: _Optional[float] = ..., started_unix: _Optional[float] = ..., finished_unix: _Optional[float] = ..., error: _Optional[str] = ..., file_count: _Optional[int] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("manifest_json", "backend", "device", "precision", "max_batch_size", "request_batch_size", "max_queue_delay_seconds", "config_json", "chunk_bytes", "max_image_pixels", "max_tile_pixels", "version", "max_inputs", "max_name_bytes", "upload_idle_seconds", "max_calls_per_peer", "vector_formats")
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_DELAY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_TILE_PIXELS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_INPUTS_FIELD_NUMBER: _ClassVar[int]
    MAX_NAME_BYTES_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_IDLE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_CALLS_PER_PEER_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FORMATS_FIELD_NUMBER: _ClassVar[int]
    manifest_json: str
    backend: str
    device: str
    precision: str
    max_batch_size: int
    request_batch_size: int
    max_queue_delay_seconds: float
    config_json: str
    chunk_bytes: int
    max_image_pixels: int
    max_tile_pixels: int
    version: str
    max_inputs: int
    max_name_bytes: int
    upload_idle_seconds: float
    max_calls_per_peer: int
    vector_formats: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, manifest_json: _Optional[str] = ..., backend: _Optional[str] = ..., device: _Optional[str] = ..., precision: _Optional[str] = ..., max_batch_size: _Optional[int] = ..., request_batch_size: _Optional[int] = ..., max_queue_delay_seconds: _Optional[float] = ..., config_json: _Optional[str] = ..., chunk_bytes: _Optional[int] = ..., max_image_pixels: _Optional[int] = ..., max_tile_pixels: _Optional[int] = ..., version: _Optional[str] = ..., max_inputs: _Optional[int] = ..., max_name_bytes: _Optional[int] = ..., upload_idle_seconds: _Optional[float] = ..., max_calls_per_peer: _Optional[int] = ..., vector_formats: _Optional[_Iterable[str]] = ...) -> None: ...
