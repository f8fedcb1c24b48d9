"""samsem.server.review.web: the JSON endpoints, DZI tiles, token and host checks (TestClient)."""

import json
import socket

import cv2
import numpy as np
import pytest
from starlette.testclient import TestClient
from test_review import _out

from samsem.cli import main
from samsem.errors import ConfigError
from samsem.io import read_mask, write_image, write_mask
from samsem.server.review import web


def _folder(tmp_path, size=8):
    (tmp_path / "out").mkdir()
    out = _out(tmp_path / "out")
    image = (np.arange(size * size).reshape(size, size) % 256).astype(np.uint8)
    (tmp_path / "images").mkdir()
    write_image(tmp_path / "images" / "a.png", image)
    alt = tmp_path / "model1"
    write_mask(alt / "a.mask.png", np.ones((8, 8), bool))
    return out, web.ReviewConfig(out, tmp_path / "images", {"model1": alt})


def _client(config, **kw):
    return TestClient(web.create_app(config, **kw), base_url="http://127.0.0.1:8765")


def _png(response):
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    return cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_UNCHANGED)


def test_queue_accept_replace_summary(tmp_path):
    out, config = _folder(tmp_path)
    client = _client(config)
    queue = client.get("/api/queue").json()
    assert [(q["image"], q["index"], q["version"]) for q in queue] == [("a", i, 0) for i in (1, 2, 3, 0)]
    assert client.post("/api/accept", json={"image": "a", "patch": 1}).json()["action"] == "accept"
    r = client.post("/api/replace", json={"image": "a", "patch": 2, "source": "model1"})
    assert r.status_code == 200 and r.json()["action"] == "replace:model1" and r.json()["version"] == 1
    mask = read_mask(out / "a.mask.png")
    assert mask[4:8, 0:4].all() and mask.sum() == 16
    assert client.get("/api/queue").json()[0]["version"] == 1
    assert client.get("/api/summary").json() == {
        "patches": 4,
        "reviewed": 2,
        "actions": {"accept": 1, "replace": 1},
    }
    actions = [json.loads(line)["action"] for line in (out / "review.jsonl").read_text().splitlines()]
    assert actions == ["accept", "replace:model1"]


def test_replace_from_file(tmp_path):
    out, config = _folder(tmp_path)
    other = tmp_path / "other.mask.png"
    write_mask(other, np.ones((8, 8), bool))
    r = _client(config).post(
        "/api/replace", json={"image": "a", "patch": 0, "source": "file", "file": str(other)}
    )
    assert r.status_code == 200 and read_mask(out / "a.mask.png")[0:4, 0:4].all()


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"image": "a", "patch": 9}, "no patch 9"),
        ({"image": "b", "patch": 0}, "no report for image 'b'"),
        ({"image": "a"}, "integer 'patch'"),
        ({"image": "a", "patch": 1, "source": "model2"}, "--alternative model2=DIR"),
        ({"image": "a", "patch": 1, "source": "sam3"}, "unknown source"),
        ({"image": "a", "patch": 1, "source": "file"}, "needs a 'file'"),
    ],
)
def test_bad_requests_are_400_with_one_line(tmp_path, body, needle):
    out, config = _folder(tmp_path)
    client = _client(config)
    path = "/api/replace" if "source" in body else "/api/accept"
    r = client.post(path, json=body)
    assert r.status_code == 400 and needle in r.json()["error"] and "\n" not in r.json()["error"]
    assert not (out / "review.jsonl").exists()


def test_post_must_be_json(tmp_path):
    out, config = _folder(tmp_path)
    r = _client(config).post(
        "/api/accept", content='{"image": "a", "patch": 1}', headers={"content-type": "text/plain"}
    )
    assert r.status_code == 400 and "application/json" in r.json()["error"]
    assert not (out / "review.jsonl").exists()


def test_dzi_and_tiles(tmp_path):
    out, config = _folder(tmp_path, size=8)
    write_mask(out / "a.mask.png", np.eye(8, dtype=bool))
    client = _client(config)
    dzi = client.get("/dzi/a.dzi")
    assert dzi.status_code == 200 and 'Width="8" Height="8"' in dzi.text and 'TileSize="256"' in dzi.text
    assert _png(client.get("/tiles/a/image/3/0_0.png")).shape == (8, 8)
    assert _png(client.get("/tiles/a/image/0/0_0.png")).shape == (1, 1)
    mask = _png(client.get("/tiles/a/mask/3/0_0.png"))
    assert mask.shape == (8, 8, 4) and (mask[..., 3] > 0).sum() == 8
    outline = _png(client.get("/tiles/a/outline/3/0_0.png"))
    assert outline.shape == (8, 8, 4) and outline[..., 3].any()
    assert client.get("/tiles/a/mask/4/0_0.png").status_code == 404
    assert client.get("/tiles/a/mask/3/1_0.png").status_code == 404
    assert client.get("/tiles/a/nope/3/0_0.png").status_code == 404
    assert client.get("/tiles/b/mask/3/0_0.png").status_code == 404


def test_large_image_tiles_cover_it(tmp_path):
    out, _config = _folder(tmp_path, size=8)
    (out / "a.report.json").write_text(json.dumps({"patches": [{"index": 0, "box": [0, 0, 300, 600]}]}))
    write_mask(out / "a.mask.png", np.ones((300, 600), bool))
    client = _client(web.ReviewConfig(out))
    assert 'Width="600" Height="300"' in client.get("/dzi/a.dzi").text
    assert _png(client.get("/tiles/a/mask/10/2_1.png")).shape == (44, 88, 4)  # 600 = 2*256+88
    assert _png(client.get("/tiles/a/mask/9/1_0.png")).shape == (150, 44, 4)  # level 9: 300x150


def test_replace_changes_the_mask_tiles(tmp_path):
    _, config = _folder(tmp_path)
    client = _client(config)
    before = _png(client.get("/tiles/a/mask/3/0_0.png"))
    assert not before[..., 3].any()
    client.post("/api/replace", json={"image": "a", "patch": 2, "source": "model1"})
    after = _png(client.get("/tiles/a/mask/3/0_0.png"))
    assert (after[..., 3] > 0).sum() == 16


def test_missing_image_is_404_with_reason(tmp_path):
    out, _config = _folder(tmp_path)
    r = _client(web.ReviewConfig(out)).get("/tiles/a/image/3/0_0.png")
    assert r.status_code == 404 and "input image of 'a' not found" in r.json()["error"]


def test_token_is_checked_on_every_request(tmp_path):
    out, _config = _folder(tmp_path)
    client = _client(web.ReviewConfig(out, token="s3cret"))
    assert client.get("/api/queue").status_code == 401
    assert client.get("/api/queue?token=wrong").status_code == 401
    assert client.get("/api/queue?token=s3cret").status_code == 200
    assert client.get("/api/queue", headers={"X-Samsem-Token": "s3cret"}).status_code == 200
    assert client.get("/dzi/a.dzi", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.post("/api/accept", json={"image": "a", "patch": 1}).status_code == 401
    assert not (out / "review.jsonl").exists()


def test_loopback_refuses_other_host_names(tmp_path):
    _, config = _folder(tmp_path)
    client = TestClient(web.create_app(config), base_url="http://evil.example:8765")
    assert client.get("/api/queue").status_code == 400


def test_non_loopback_host_needs_a_token(tmp_path):
    out, _config = _folder(tmp_path)
    with pytest.raises(ConfigError, match="--token"):
        web.serve(out, None, {}, host="0.0.0.0", port=0, token=None)


def test_missing_openseadragon_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv(web.WEB_DIR_ENV, str(tmp_path / "none"))
    with pytest.raises(ConfigError, match="OpenSeadragon is not installed") as e:
        web.openseadragon_dir()
    assert "\n" not in str(e.value)


def test_is_loopback():
    assert all(map(web.is_loopback, ["127.0.0.1", "localhost", "::1", "[::1]", "127.1.2.3"]))
    assert not any(map(web.is_loopback, ["0.0.0.0", "192.168.1.4", "example.org", "::"]))


def test_queue_says_what_was_decided(tmp_path):
    _, config = _folder(tmp_path)
    client = _client(config)
    client.post("/api/accept", json={"image": "a", "patch": 3})
    reviewed = {q["index"]: q["reviewed"] for q in client.get("/api/queue").json()}
    assert reviewed == {0: None, 1: None, 2: None, 3: "accept"}


def test_page_with_token_sets_the_cookie_the_page_uses(tmp_path):
    _, config = _folder(tmp_path)
    client = _client(web.ReviewConfig(config.out, token="s3cret"))
    assert client.get("/").status_code == 401
    assert client.get("/?token=s3cret").status_code == 200
    assert client.get("/api/queue").status_code == 200  # the cookie


def test_port_in_use_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    out, _ = _folder(tmp_path)
    build = tmp_path / "web" / "node_modules" / "openseadragon" / "build" / "openseadragon"
    build.mkdir(parents=True)
    (build / "openseadragon.min.js").write_text("")
    monkeypatch.setenv(web.WEB_DIR_ENV, str(tmp_path / "web"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main(["review", str(out), "--port", str(taken.getsockname()[1])]) == 2
    err = capsys.readouterr().err
    assert "cannot listen on 127.0.0.1:" in err and len(err.strip().splitlines()) == 1
