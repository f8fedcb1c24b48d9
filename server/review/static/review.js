// The review page: the queue at the side, the current patch's image with the mask and outline tile
// layers in OpenSeadragon, accept / replace buttons, keys n / p to step.
"use strict";

const LAYERS = ["image", "mask", "outline"];
const viewer = OpenSeadragon({
  id: "viewer",
  showNavigationControl: false,
  maxZoomPixelRatio: 8,
  imageSmoothingEnabled: false,
});
let queue = [];
let current = -1;
let opened = null; // "image@version" shown in the viewer
let box = null;

function status(text) {
  document.getElementById("status").textContent = text;
}

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  };
  const response = await fetch(path, init);
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function tileSource(image, layer, width, height, version) {
  return {
    width, height, tileSize: 256, tileOverlap: 0,
    getTileUrl: (level, x, y) =>
      `/tiles/${encodeURIComponent(image)}/${layer}/${level}/${x}_${y}.png?v=${version}`,
  };
}

async function openImage(image, version) {
  const xml = new DOMParser().parseFromString(
    await (await fetch(`/dzi/${encodeURIComponent(image)}.dzi`)).text(), "application/xml");
  const size = xml.getElementsByTagName("Size")[0];
  const width = Number(size.getAttribute("Width"));
  const height = Number(size.getAttribute("Height"));
  await new Promise((resolve) => {
    viewer.addOnceHandler("open", resolve);
    viewer.open(LAYERS.map((layer) => ({
      tileSource: tileSource(image, layer, width, height, version),
      opacity: layer === "image" || document.getElementById(`layer-${layer}`).checked ? 1 : 0,
    })));
  });
  opened = `${image}@${version}`;
}

function renderQueue() {
  const list = document.getElementById("queue");
  list.replaceChildren(...queue.map((q, i) => {
    const li = document.createElement("li");
    li.dataset.index = i;
    li.textContent = `${q.image} #${q.index} ${q.source} ` +
      `d=${q.disagreement.toFixed(2)} s=${q.score === null ? "-" : q.score.toFixed(2)}` +
      (q.reviewed ? ` [${q.reviewed}]` : "");
    li.classList.toggle("flagged", q.flagged);
    li.classList.toggle("done", q.reviewed !== null);
    li.classList.toggle("current", i === current);
    li.addEventListener("click", () => select(i));
    return li;
  }));
}

async function select(i) {
  if (i < 0 || i >= queue.length) return;
  current = i;
  const q = queue[i];
  renderQueue();
  document.querySelector("#queue li.current").scrollIntoView({ block: "nearest" });
  try {
    if (opened !== `${q.image}@${q.version}`) await openImage(q.image, q.version);
  } catch (e) {
    status(`${q.image}: ${e.message}`);
    return;
  }
  const [y0, x0, y1, x1] = q.box;
  const rect = viewer.world.getItemAt(0).imageToViewportRectangle(x0, y0, x1 - x0, y1 - y0);
  if (box === null) {
    box = document.createElement("div");
    box.className = "patchbox";
  } else {
    viewer.removeOverlay(box);
  }
  viewer.addOverlay(box, rect);
  viewer.viewport.fitBoundsWithConstraints(new OpenSeadragon.Rect(
    rect.x - rect.width * 0.25, rect.y - rect.height * 0.25, rect.width * 1.5, rect.height * 1.5), true);
  status(`${i + 1}/${queue.length}: ${q.image} patch ${q.index} (${q.source}` +
    `${q.flagged ? ", flagged" : ""})${q.reviewed ? ` — ${q.reviewed}` : ""}`);
}

async function decide(path, body, step) {
  const q = queue[current];
  if (q === undefined) return;
  try {
    const entry = await api(path, { image: q.image, patch: q.index, ...body });
    for (const other of queue) {
      if (other.image === q.image && entry.version !== undefined) other.version = entry.version;
    }
    q.reviewed = entry.action;
    await select(step ? Math.min(current + 1, queue.length - 1) : current);
    status(`${q.image} patch ${q.index}: ${entry.action} recorded`);
  } catch (e) {
    status(e.message);
  }
}

document.getElementById("accept").addEventListener("click", () => decide("/api/accept", {}, true));
for (const source of ["model1", "model2"]) {
  document.getElementById(`replace-${source}`).addEventListener(
    "click", () => decide("/api/replace", { source }, false));
}
for (const [k, layer] of LAYERS.entries()) {
  if (layer === "image") continue;
  document.getElementById(`layer-${layer}`).addEventListener("change", (event) => {
    const item = viewer.world.getItemAt(k);
    if (item) item.setOpacity(event.target.checked ? 1 : 0);
  });
}
document.addEventListener("keydown", (event) => {
  if (event.target.tagName === "INPUT" || event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.key === "n") select(current + 1);
  else if (event.key === "p") select(current - 1);
});

api("/api/queue").then((items) => {
  queue = items;
  renderQueue();
  if (queue.length) select(0);
  else status("nothing to review");
}).catch((e) => status(e.message));
