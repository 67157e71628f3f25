// The digits page: a canvas or an uploaded image goes to the public API (/predict or /read, with
// ?debug=1 for the 28x28 the model saw), the answer is shown, and a wrong one can be corrected (POST
// /feedback with the answer's id). No framework, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const ctx = canvas.getContext("2d");
// The API's `reason` when it found no digit, in words.
const why = (reason) => (reason === "blank" ? (source() === "draw" ? "Nothing drawn" : "The image looks blank")
  : "That doesn't look like a digit");

let strokes = [];     // [{width, points: [[x, y], ...]}]: kept so undo can redraw without the last one
let current = null;   // the stroke being drawn
let upload = null;    // the last uploaded File
let asked = 0;        // numbers each request so a slow old answer cannot overwrite a newer one
let answerId = null;  // the `id` of the /predict answer on show, for POST /feedback; null when none

const mode = () => document.querySelector("input[name=mode]:checked").value;
const source = () => document.querySelector("input[name=source]:checked").value;
const hasInput = () => (source() === "draw" ? strokes.length > 0 : upload !== null);
const idle = () => (source() === "draw" ? `Draw ${mode() === "number" ? "a number" : "a digit"} to start.`
  : "Choose or drop an image.");

// --- drawing ---------------------------------------------------------------------------------------

function redraw() {
  ctx.fillStyle = "#fff"; // opaque paper: a transparent PNG would leave the server guessing the background
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.strokeStyle = "#111";
  ctx.fillStyle = "#111";
  ctx.lineCap = ctx.lineJoin = "round";
  for (const s of current ? [...strokes, current] : strokes) {
    const p = s.points;
    ctx.lineWidth = s.width;
    if (p.length === 1) { // a tap is a dot
      ctx.beginPath();
      ctx.arc(p[0][0], p[0][1], s.width / 2, 0, 2 * Math.PI);
      ctx.fill();
      continue;
    }
    // Quadratic curves through the midpoints between samples: smooth, and still passes near every sample.
    ctx.beginPath();
    ctx.moveTo(p[0][0], p[0][1]);
    for (let i = 1; i < p.length - 1; i++) {
      ctx.quadraticCurveTo(p[i][0], p[i][1], (p[i][0] + p[i + 1][0]) / 2, (p[i][1] + p[i + 1][1]) / 2);
    }
    ctx.lineTo(p[p.length - 1][0], p[p.length - 1][1]);
    ctx.stroke();
  }
  $("undo").disabled = $("clear").disabled = strokes.length === 0;
}

function point(e) { // the canvas is scaled by CSS: map screen pixels to drawing pixels
  const r = canvas.getBoundingClientRect();
  return [(e.clientX - r.left) * canvas.width / r.width, (e.clientY - r.top) * canvas.height / r.height];
}

canvas.addEventListener("pointerdown", (e) => {
  if (e.button !== 0) return;
  canvas.setPointerCapture(e.pointerId); // keep the stroke even if the pen leaves the canvas
  current = { width: +$("thickness").value, points: [point(e)] };
  clearBoxes();
  redraw();
});

canvas.addEventListener("pointermove", (e) => {
  if (!current) return;
  // Coalesced events: the samples the browser merged between frames, for smoother fast strokes.
  const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e];
  for (const ev of events.length ? events : [e]) current.points.push(point(ev));
  redraw();
});

function endStroke() {
  if (!current) return;
  strokes.push(current);
  current = null;
  redraw();
  send();
}
canvas.addEventListener("pointerup", endStroke);
canvas.addEventListener("pointercancel", endStroke);

$("undo").addEventListener("click", () => {
  strokes.pop();
  redraw();
  strokes.length ? send() : reset(idle());
});

$("clear").addEventListener("click", () => {
  strokes = [];
  redraw();
  reset(idle());
});

$("thickness").addEventListener("input", () => { $("thickness-value").value = $("thickness").value; });

function sizeCanvas() { // a number needs room for several digits side by side
  canvas.width = mode() === "number" ? 560 : 280;
  canvas.classList.toggle("wide", mode() === "number");
  redraw(); // resizing wipes a canvas: the strokes are kept, so draw them again
}

// --- uploading -------------------------------------------------------------------------------------

function take(file) {
  if (!file) return;
  upload = file;
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  $("upload-stage").hidden = false;
  clearBoxes();
  send();
}

$("preview").addEventListener("error", () => { $("upload-stage").hidden = true; }); // not an image: nothing to show
$("file").addEventListener("change", (e) => take(e.target.files[0]));
$("photo").addEventListener("change", (e) => take(e.target.files[0]));

const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  take(e.dataTransfer.files[0]);
});

// Sample photos (serve/static/samples/, from python -m testkit.samples): each is sent exactly as an upload.
async function loadSamples() {
  let index;
  try {
    index = await (await fetch("/static/samples/index.json")).json();
  } catch (e) {
    return; // no samples on this server: the gallery stays hidden
  }
  const list = $("sample-list");
  for (const sample of index) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "sample";
    button.dataset.file = sample.file;
    const img = document.createElement("img");
    img.src = `/static/samples/${sample.file}`;
    img.alt = "";
    const caption = document.createElement("span");
    caption.textContent = sample.caption;
    button.append(img, caption);
    button.addEventListener("click", async () => {
      const blob = await (await fetch(img.src)).blob();
      take(new File([blob], sample.file, { type: blob.type }));
    });
    item.append(button);
    list.append(item);
  }
  $("samples").hidden = false;
}
loadSamples();

// --- switches --------------------------------------------------------------------------------------

for (const radio of document.querySelectorAll("input[name=source]")) {
  radio.addEventListener("change", () => {
    $("draw-panel").hidden = source() !== "draw";
    $("upload-panel").hidden = source() !== "upload";
    hasInput() ? send() : reset(idle());
  });
}

for (const radio of document.querySelectorAll("input[name=mode]")) {
  radio.addEventListener("change", () => {
    sizeCanvas();
    clearBoxes();
    hasInput() ? send() : reset(idle());
  });
}

// --- asking the API --------------------------------------------------------------------------------

async function send() {
  const id = ++asked;
  const body = new FormData();
  if (source() === "draw") {
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
    body.append("image", blob, "drawing.png");
  } else {
    body.append("image", upload, upload.name);
  }
  const route = mode() === "number" ? "/read?debug=1" : "/predict?debug=1";
  $("status").setAttribute("aria-busy", "true");
  let answer;
  try {
    const response = await fetch(route, { method: "POST", body });
    answer = await response.json().catch(() => ({ error: { message: `The server answered ${response.status}.` } }));
  } catch (e) {
    answer = { error: { message: "Could not reach the server." } };
  }
  if (id !== asked) return; // a newer request is on its way
  $("status").removeAttribute("aria-busy");
  answer.error ? showError(answer.error.message) : mode() === "number" ? showNumber(answer) : showDigit(answer);
}

// --- showing the answer ----------------------------------------------------------------------------

function reset(text) {
  asked++; // forget any answer still on its way
  $("answer").textContent = "–";
  $("message").textContent = text;
  $("message").className = "message";
  $("confidence").textContent = "";
  $("model").textContent = "";
  $("digits").hidden = $("chart-figure").hidden = $("seen-figure").hidden = true;
  clearBoxes();
  offerCorrection(null);
}

function showError(text) {
  reset(text);
  $("message").className = "message error";
}

const percent = (p) => `${(100 * p).toFixed(1)}%`;

function showDigit(a) {
  reset(a.prediction === null ? why(a.reason) : "");
  $("answer").textContent = a.prediction ?? (a.reason === "blank" ? "–" : "?");
  if (a.reason !== "blank") showDetails(a);
  $("model").textContent = `model ${a.model}`;
  offerCorrection(a.id);
}

function showNumber(a) {
  reset(a.number === null ? (a.reason === "blank" ? why("blank") : "One of the pieces doesn't look like a digit") : "");
  $("answer").textContent = a.number ?? (a.reason === "blank" ? "–" : "?");
  if (a.digits.length) {
    $("confidence").textContent = `least sure digit ${percent(Math.min(...a.digits.map((d) => d.confidence)))}`;
  }
  drawBoxes(a.digits);
  // One button per digit found: it shows that digit's probabilities and what the model saw.
  const list = $("digits");
  list.replaceChildren(...a.digits.map((d, i) => {
    const b = document.createElement("button");
    b.type = "button";
    b.innerHTML = `<img alt="" src="${d.input}"><span>${d.prediction ?? "?"}</span>`;
    b.setAttribute("aria-label", `digit ${i + 1}: ${d.prediction ?? "not a digit"}, ${percent(d.confidence)}`);
    b.addEventListener("click", () => pick(i, d));
    return b;
  }));
  list.hidden = a.digits.length === 0;
  if (a.digits.length) pick(0, a.digits[0]);
  $("model").textContent = `model ${a.model}`;
}

function pick(i, d) {
  $("digits").querySelectorAll("button").forEach((b, j) => b.setAttribute("aria-pressed", String(i === j)));
  showDetails(d);
}

function showDetails(a) { // confidence, the ten probabilities as bars, and the 28x28 input
  if (mode() !== "number") $("confidence").textContent = `confidence ${percent(a.confidence)}`;
  const best = a.probabilities.indexOf(Math.max(...a.probabilities));
  $("chart").replaceChildren(...a.probabilities.map((p, digit) => {
    const bar = document.createElement("div");
    bar.className = digit === best ? "bar best" : "bar";
    bar.title = `${digit}: ${percent(p)}`;
    bar.innerHTML = `<span class="fill" style="height:${(100 * p).toFixed(1)}%"></span><span class="label">${digit}</span>`;
    return bar;
  }));
  $("chart").setAttribute("aria-label", "probabilities: " + a.probabilities.map((p, d) => `${d} ${percent(p)}`).join(", "));
  $("chart-figure").hidden = false;
  if (a.input) {
    $("seen").src = a.input;
    $("seen-figure").hidden = false;
  }
}

// Boxes are [x, y, w, h] in the image's own pixels; percentages keep them on the digits at any display size.
function drawBoxes(digits) {
  const stage = source() === "draw" ? $("draw-stage") : $("upload-stage");
  const media = stage.querySelector("canvas, img");
  if (media.tagName === "IMG" && !media.naturalWidth) { // the answer came before the picture loaded
    media.addEventListener("load", () => drawBoxes(digits), { once: true });
    return;
  }
  const w = media.naturalWidth || media.width, h = media.naturalHeight || media.height;
  stage.querySelector(".boxes").replaceChildren(...digits.map((d) => {
    const [x, y, bw, bh] = d.box;
    const box = document.createElement("div");
    box.className = d.prediction === null ? "box bad" : "box";
    box.style.cssText = `left:${100 * x / w}%;top:${100 * y / h}%;width:${100 * bw / w}%;height:${100 * bh / h}%`;
    box.dataset.digit = d.prediction ?? "?";
    return box;
  }));
}

function clearBoxes() {
  for (const boxes of document.querySelectorAll(".boxes")) boxes.replaceChildren();
}

// --- correcting an answer --------------------------------------------------------------------------
// "Wrong? It was ...": one correction per /predict answer, sent as JSON {id, label} (/read has no ids).

const choices = () => $("correct").querySelectorAll("button");
const named = (label) => (label === "not_a_digit" ? "not a digit" : label);

function offerCorrection(id) { // a new answer (or none): the group fresh, or hidden
  answerId = id ?? null;
  $("correct").hidden = answerId === null;
  for (const b of choices()) b.disabled = false;
  thank("");
}

function thank(text, error = false) {
  $("thanks").textContent = text;
  $("thanks").className = error ? "thanks error" : "thanks";
}

async function correct(button) {
  const id = answerId, label = button.dataset.label;
  const focused = $("correct").contains(document.activeElement); // disabling the button loses the focus
  for (const b of choices()) b.disabled = true;
  thank("Sending…");
  let kept;
  try {
    const response = await fetch("/feedback", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ id, label }) });
    kept = await response.json().catch(() => ({ error: { message: `The server answered ${response.status}.` } }));
  } catch (e) {
    kept = { error: { message: "Could not reach the server." } };
  }
  if (id !== answerId) return; // a new answer is on show: this correction's group is gone
  if (kept.error) { // the buttons come back: a rate limit or a lost connection is worth another try
    for (const b of choices()) b.disabled = false;
    thank(kept.error.message, true);
    if (focused) button.focus();
    return;
  }
  thank(kept.duplicate ? `Already noted as ${named(kept.label)} (correction #${kept.id}). Thank you!`
    : `Thank you! Noted as ${named(kept.label)} (correction #${kept.id}), waiting for review.`);
  if (focused) $("thanks").focus(); // a keyboard user stays where they were
}

for (const b of choices()) b.addEventListener("click", () => correct(b));

redraw();
