"use strict";
// The oneword gallery: plain JavaScript, no build step. State lives in the store; this page
// only shows it and sends ratings, breeding and mixing requests.
const state = { runId: null, run: null, loaded: 0, focus: 0, image: 0, selected: new Set(), job: null, events: null };
const $ = (id) => document.getElementById(id);

async function api(path, options = {}) {
  const response = await fetch(path, { headers: { "Content-Type": "application/json" }, ...options });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail || response.statusText);
  return body;
}

function say(text) { $("status").textContent = text || ""; }

async function loadRuns(select) {
  const runs = await api("/api/runs");
  const menu = $("run-select");
  menu.innerHTML = "";
  for (const r of runs) {
    const o = document.createElement("option");
    o.value = r.id;
    const status = r.status === "done" ? "" : ` [${r.status}]`;
    const best = r.best === null ? "" : ` best ${Number(r.best).toFixed(3)}`;
    o.textContent = `${r.name} ${r.kind}${r.generation ? " g" + r.generation : ""} ${r.token} (${r.candidates})${best}${status}`;
    menu.appendChild(o);
  }
  const wanted = select || state.runId || (runs.length ? runs[runs.length - 1].id : null);
  if (wanted) { menu.value = wanted; await loadRun(Number(wanted)); }
}

async function loadRun(runId) {
  state.runId = runId;
  state.run = await api(`/api/runs/${runId}`);
  state.loaded = Date.now();
  state.focus = Math.min(state.focus, Math.max(0, state.run.candidates.length - 1));
  state.selected.clear();
  render();
}

function stars(cand) {
  const box = document.createElement("span");
  box.className = "stars";
  for (let v = 1; v <= 5; v++) {
    const b = document.createElement("button");
    b.textContent = "★";
    b.setAttribute("data-testid", `star-${cand.name}-${v}`);
    if (cand.rating !== null && v <= Math.round(cand.rating)) b.className = "on";
    b.onclick = (e) => { e.stopPropagation(); rate(cand, v, null); };
    box.appendChild(b);
  }
  return box;
}

// The run's training photos on top (each with its mask over it, for a masked run).
function renderPhotos() {
  const box = $("masks");
  box.innerHTML = "";
  const masked = state.run.masks.length > 0;
  const shown = masked ? state.run.masks : state.run.photos;
  box.hidden = !shown.length;
  if (box.hidden) return;
  const title = document.createElement("h2");
  title.textContent = masked ? "Training photos and their masks (dark: little weight)" : "Training photos";
  box.appendChild(title);
  for (const m of shown) {
    const fig = document.createElement("figure");
    const im = document.createElement("img");
    im.src = masked ? `/api/runs/${state.runId}/masks/${m.index}` : `/api/runs/${state.runId}/photos/${m.index}`;
    im.alt = im.title = m.name;
    im.setAttribute("data-testid", masked ? `mask-${m.name}` : `photo-${m.index}`);
    im.onclick = () => enlarge(im.src, m.name);
    fig.appendChild(im);
    const cap = document.createElement("figcaption");
    cap.textContent = m.name;
    fig.appendChild(cap);
    box.appendChild(fig);
  }
}

// A learn run's preview sheets (word, step, prompts and seeds written on each), oldest first.
function renderPreviews() {
  const box = $("previews");
  box.innerHTML = "";
  box.hidden = !state.run.previews.length;
  if (box.hidden) return;
  const title = document.createElement("h2");
  title.textContent = "Previews while it learned";
  box.appendChild(title);
  for (const p of state.run.previews) {
    const im = document.createElement("img");
    im.src = `/api/runs/${state.runId}/previews/${p.index}`;
    im.alt = im.title = p.name;
    im.setAttribute("data-testid", `preview-${p.index}`);
    im.onclick = () => enlarge(im.src, p.name);
    box.appendChild(im);
  }
}

// The best word found against the compute spent, for the run's sweep and its generations.
function renderCompute() {
  const box = $("compute");
  box.innerHTML = "";
  box.hidden = !state.run.compute;
  if (box.hidden) return;
  const title = document.createElement("h2");
  title.textContent = "Quality against compute (the best word so far, label-free score)";
  box.appendChild(title);
  const im = document.createElement("img");
  im.src = `/api/runs/${state.runId}/compute?v=${state.loaded}`;  // redrawn as runs are scored
  im.alt = im.title = "the combined score of the best word found against the compute spent";
  im.setAttribute("data-testid", "compute-picture");
  im.onclick = () => enlarge(im.src, im.alt);
  box.appendChild(im);
}

function renderHint() {
  const hint = $("hint");
  hint.textContent = state.run.hint || "";
  hint.hidden = !state.run.hint;
  hint.className = ["failed", "interrupted"].includes(state.run.status) ? "hint bad" : "hint";
  if (state.run.can_score) {
    const b = document.createElement("button");
    b.textContent = "Score";
    b.setAttribute("data-testid", "score-button");
    b.onclick = () => startJob(`/api/runs/${state.runId}/score`);
    hint.appendChild(document.createTextNode(" "));
    hint.appendChild(b);
  }
}

const fmt = (v) => (v === null || v === undefined ? "–" : Number(v).toFixed(3));

// concept · prompt · combined ±interval, or "within noise of the best".
function scoreLine(cand) {
  const s = cand.score;
  if (!s) return "";
  let combined = `combined <b>${fmt(s.combined)}</b>`;
  if (s.interval !== null) combined += ` ±${fmt(s.interval)}`;
  if (!s.one_scale) combined += " (scaled within this run)";
  const noise = s.within_noise ? ' <span class="noise">within noise of the best</span>' : "";
  return `<span class="rank">#${s.rank}</span> concept ${fmt(s.concept)} · prompt ${fmt(s.prompt)} · ${combined}${noise}`;
}

function fileLinks(cand) {
  const box = document.createElement("div");
  box.className = "files";
  for (const f of cand.files) {
    const a = document.createElement("a");
    a.href = `/api/candidates/${cand.id}/files/${f.index}`;
    a.download = f.name;
    a.textContent = f.name;
    a.title = `download (${f.format})`;
    a.setAttribute("data-testid", `file-${cand.name}-${f.index}`);
    a.onclick = (e) => e.stopPropagation();
    box.appendChild(a);
    box.appendChild(document.createTextNode(` ${f.format} `));
    box.appendChild(document.createElement("br"));
  }
  return box;
}

function candidateInfo(cand) {
  const info = document.createElement("div");
  info.className = "info";
  info.innerHTML = `<div class="name">${cand.name}${cand.best ? ' <span class="badge" data-testid="best-' + cand.name + '">best</span>' : ""}</div>` +
    `<div>${cand.relation}</div>` +
    `<div class="scores">${cand.parents.map(p => p.name).join(" × ") || "seed " + cand.seed}</div>` +
    `<div class="scoreline" data-testid="score-${cand.name}">${scoreLine(cand)}</div>` +
    (cand.cut ? `<div class="scores" data-testid="cut-${cand.name}">${cand.cut.kept ? "kept" : "cut"} at step ${cand.cut.step} (score ${cand.cut.score})</div>` : "") +
    `<div class="scores" data-testid="rating-${cand.name}">rating ${cand.rating === null ? "–" : cand.rating}</div>`;
  info.appendChild(stars(cand));
  const fav = document.createElement("button");
  fav.className = "fav" + (cand.favourite ? " on" : "");
  fav.textContent = "♥";
  fav.title = "favourite (f)";
  fav.setAttribute("data-testid", `favourite-${cand.name}`);
  fav.onclick = (e) => { e.stopPropagation(); favourite(cand); };
  info.appendChild(fav);
  info.appendChild(fileLinks(cand));
  return info;
}

function render() {
  renderPhotos();
  renderPreviews();
  renderCompute();
  renderHint();
  const grid = $("grid");
  grid.innerHTML = "";
  state.run.candidates.forEach((cand, k) => {
    const row = document.createElement("div");
    row.className = "cand" + (k === state.focus ? " focused" : "") + (state.selected.has(cand.id) ? " selected" : "") + (cand.best ? " best" : "");
    row.setAttribute("data-testid", `candidate-${cand.name}`);
    row.dataset.rating = cand.rating === null ? "" : cand.rating;
    row.appendChild(candidateInfo(cand));
    const images = document.createElement("div");
    images.className = "images";
    cand.images.forEach((im, i) => {
      const fig = document.createElement("figure");
      const img = document.createElement("img");
      img.src = `/api/images/${im.id}`;
      img.alt = im.prompt;
      img.title = `${im.prompt} (seed ${im.seed}); click again to enlarge`;
      img.setAttribute("data-testid", `image-${im.id}`);
      const focused = k === state.focus && i === state.image;
      if (focused) img.className = "focused";
      img.onclick = () => {
        if (focused) { enlarge(img.src, `${im.prompt} (seed ${im.seed})`); return; }
        state.focus = k; state.image = i; render(); showLineage();
      };
      img.ondblclick = () => enlarge(img.src, `${im.prompt} (seed ${im.seed})`);
      fig.appendChild(img);
      const cap = document.createElement("figcaption");
      const r = (cand.image_ratings || {})[im.id];
      cap.textContent = `${im.prompt} · seed ${im.seed}${r ? " ★" + r : ""}`;
      fig.appendChild(cap);
      images.appendChild(fig);
    });
    row.appendChild(images);
    row.onclick = () => { if (state.focus !== k) { state.focus = k; state.image = 0; render(); showLineage(); } };
    grid.appendChild(row);
  });
  $("mix-button").disabled = state.selected.size < 2;
}

// The enlarged image: a click or any key closes it (the key then does what it does).
function enlarge(src, caption) {
  $("lightbox-image").src = src;
  $("lightbox-caption").textContent = caption;
  $("lightbox").hidden = false;
}
function closeLightbox() { $("lightbox").hidden = true; }

async function rate(cand, value, imageId) {
  try {
    const result = await api(`/api/candidates/${cand.id}/rating`, {
      method: "POST", body: JSON.stringify({ rating: value, image_id: imageId }) });
    Object.assign(cand, { rating: result.rating, favourite: result.favourite, image_ratings: result.image_ratings });
    say(`rated ${cand.name}: ${value}`);
    render();
  } catch (err) { say(err.message); }
}

async function favourite(cand) {
  const on = !cand.favourite;
  try {
    const result = await api(`/api/candidates/${cand.id}/rating`, {
      method: "POST", body: JSON.stringify({ rating: on ? 5 : 0, favourite: true }) });
    Object.assign(cand, { rating: result.rating, favourite: result.favourite, image_ratings: result.image_ratings });
    render();
  } catch (err) { say(err.message); }
}

function lineageList(node) {
  const li = document.createElement("li");
  li.textContent = `${node.name} ${node.via ? "(" + node.via + ")" : node.relation}`;
  if (node.parents.length) {
    const ul = document.createElement("ul");
    node.parents.forEach((p) => ul.appendChild(lineageList(p)));
    li.appendChild(ul);
  }
  return li;
}

async function showLineage() {
  const cand = state.run && state.run.candidates[state.focus];
  if (!cand) return;
  const tree = await api(`/api/candidates/${cand.id}/lineage`);
  const ul = document.createElement("ul");
  ul.appendChild(lineageList(tree));
  $("lineage-tree").innerHTML = "";
  $("lineage-tree").appendChild(ul);
}

async function startJob(path, body) {
  try {
    const job = await api(path, { method: "POST", body: JSON.stringify(body || {}) });
    say("");
    watchJob(job);
  } catch (err) { say(err.message); }
}

function showJob(job) {
  $("job").hidden = false;
  $("progress").max = job.total || 1;
  $("progress").value = job.done;
  $("job-text").textContent = `${job.what}: ${job.state} ${job.done}/${job.total} ${job.message}`;
  $("job").dataset.state = job.state;
  $("resume-button").hidden = job.state !== "interrupted";
}

// Progress arrives as server-sent events; EventSource reconnects by itself if the server
// restarts, and the restarted server reports a job it lost as interrupted.
function watchJob(job) {
  state.job = job.id;
  showJob(job);
  if (state.events) state.events.close();
  if (["done", "failed", "interrupted"].includes(job.state)) return;
  const events = new EventSource(`/api/jobs/${job.id}/events`);
  state.events = events;
  events.onmessage = async (e) => {
    const now = JSON.parse(e.data);
    if (!["done", "failed", "interrupted"].includes(now.state)) { showJob(now); return; }
    events.close();
    if (now.state === "done") await loadRuns(now.run_id);  // the new run first, then "done"
    showJob(now);
    if (now.state === "failed") say(now.error);
  };
}

async function resumeJob() {
  if (state.job) startJob(`/api/jobs/${state.job}/resume`);
}

async function showLatestJob() {
  const jobs = await api("/api/jobs");
  if (jobs.length && jobs[0].state !== "done") watchJob(jobs[0]);
}

// The children train on before they are drawn for the steps asked (empty: the gallery's).
function nextGeneration() {
  if (!state.runId) return;
  const steps = $("train-steps").value.trim();
  startJob(`/api/runs/${state.runId}/next`, steps === "" ? {} : { train_steps: Number(steps) });
}
function mixSelected() {
  if (state.selected.size < 2) { say("select two candidates with x first"); return; }
  startJob("/api/mix", { candidates: [...state.selected], method: $("mix-method").value });
}

document.addEventListener("keydown", (e) => {
  if (!state.run || ["SELECT", "INPUT"].includes(e.target.tagName)) return;
  const cands = state.run.candidates;
  const cand = cands[state.focus];
  const key = e.key;
  const open = !$("lightbox").hidden;
  if (open) closeLightbox();
  if (key === "Escape" && open) { e.preventDefault(); return; }
  if ((key === "Enter" || key === "e") && cand && cand.images[state.image] && !open) {
    const im = cand.images[state.image];
    enlarge(`/api/images/${im.id}`, `${im.prompt} (seed ${im.seed})`);
    e.preventDefault();
    return;
  }
  if (key === "ArrowDown" || key === "j") { state.focus = Math.min(cands.length - 1, state.focus + 1); state.image = 0; render(); showLineage(); }
  else if (key === "ArrowUp" || key === "k") { state.focus = Math.max(0, state.focus - 1); state.image = 0; render(); showLineage(); }
  else if (key === "ArrowRight") { state.image = Math.min(cand.images.length - 1, state.image + 1); render(); }
  else if (key === "ArrowLeft") { state.image = Math.max(0, state.image - 1); render(); }
  else if (/^[0-5]$/.test(key) && cand) { const im = cand.images[state.image]; rate(cand, Number(key), im ? im.id : null); }
  else if (key === "f" && cand) favourite(cand);
  else if (key === "x" && cand) { state.selected.has(cand.id) ? state.selected.delete(cand.id) : state.selected.add(cand.id); render(); }
  else if (key === "m") mixSelected();
  else if (key === "n") nextGeneration();
  else if (key === "l") showLineage();
  else return;
  e.preventDefault();
});

$("run-select").onchange = (e) => loadRun(Number(e.target.value));
$("next-button").onclick = nextGeneration;
$("mix-button").onclick = mixSelected;
$("resume-button").onclick = resumeJob;
$("lightbox").onclick = closeLightbox;
loadRuns().then(showLatestJob).catch((err) => say(err.message));
