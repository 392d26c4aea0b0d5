// The page at /ui: submit a job, follow its event stream, play the video. Plain JavaScript, no
// build step; the API key lives in sessionStorage (this tab) and goes only in X-API-Key headers.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { task: null, job: null, lastEventId: null, videoUrl: null };
window.progressSeen = []; // every step the bar showed (the browser test reads it)

function key() {
  return $("api-key").value.trim();
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function api(path, options = {}) {
  const headers = { "X-API-Key": key(), ...(options.headers || {}) };
  const response = await fetch(path, { ...options, headers });
  if (!response.ok) {
    let detail = `${response.status}`;
    try {
      const body = await response.json();
      detail = `${body.error}: ${body.message}`;
    } catch (_) { /* not JSON */ }
    throw new Error(detail);
  }
  return response;
}

function remember(jobId, label) {
  const recent = JSON.parse(sessionStorage.getItem("recent") || "[]");
  recent.unshift({ jobId, label, at: new Date().toISOString() });
  sessionStorage.setItem("recent", JSON.stringify(recent.slice(0, 20)));
  renderRecent();
}

async function renderRecent() {
  const list = $("recent");
  list.replaceChildren();
  for (const item of JSON.parse(sessionStorage.getItem("recent") || "[]")) {
    const li = document.createElement("li");
    li.textContent = `${item.jobId.slice(0, 8)}  ${item.label}`;
    li.dataset.jobId = item.jobId;
    list.append(li);
    if (key()) {
      api(`/jobs/${item.jobId}`).then((r) => r.json()).then((job) => {
        li.textContent = `${item.jobId.slice(0, 8)}  ${job.status.padEnd(9)}  ${item.label}`;
      }).catch(() => {});
    }
  }
}

function startWatching(job, label) {
  state.job = job;
  state.lastEventId = null;
  $("job").hidden = false;
  $("video").hidden = true;
  $("download").hidden = true;
  $("job-log").textContent = "";
  $("progress").value = 0;
  $("job-status").textContent = job.status;
  $("job-eta").textContent = "";
  remember(job.job_id, label);
  follow(job.job_id);
}

// Server-Sent Events over fetch (EventSource cannot send X-API-Key): split the stream into
// events at blank lines, read their `event`, `id` and `data` fields.
async function follow(jobId) {
  for (let attempt = 0; attempt < 30 && state.job && state.job.job_id === jobId; attempt++) {
    try {
      const headers = { Accept: "text/event-stream" };
      if (state.lastEventId) headers["Last-Event-ID"] = state.lastEventId;
      const response = await api(`/jobs/${jobId}/events`, { headers });
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, "\n");
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const event = { event: "message", data: "", id: null };
          for (const line of block.split("\n")) {
            const colon = line.indexOf(":");
            if (colon <= 0) continue; // comments (pings) and blank lines
            const field = line.slice(0, colon);
            const text = line.slice(colon + 1).replace(/^ /, "");
            if (field === "data") event.data += (event.data ? "\n" : "") + text;
            else if (field === "event") event.event = text;
            else if (field === "id") event.id = text;
          }
          if (event.id) state.lastEventId = event.id;
          if (event.data && handle(event.event, JSON.parse(event.data))) return;
        }
      }
    } catch (error) {
      showError(`event stream: ${error.message}; reconnecting`);
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

// One event; true when the job has ended.
function handle(kind, data) {
  if (kind === "status") {
    $("job-status").textContent = data.status + (data.queue_position ? ` (#${data.queue_position} in line)` : "");
  } else if (kind === "log") {
    $("job-log").textContent += `${data.time}  ${data.message}\n`;
  } else if (kind === "progress") {
    $("progress").max = Math.max(data.total, 1);
    $("progress").value = data.step;
    window.progressSeen.push(data.step);
    $("job-eta").textContent = data.eta_seconds != null ? `about ${Math.ceil(data.eta_seconds)} s left` : "";
  } else if (kind === "result") {
    $("job-status").textContent = "succeeded";
    $("job-eta").textContent = "";
    showVideo(data.result.video_url);
    renderRecent();
    return true;
  } else if (kind === "error") {
    $("job-status").textContent = "failed";
    showError(`${data.code}: ${data.message}`);
    renderRecent();
    return true;
  }
  return false;
}

async function showVideo(url) {
  const video = $("video");
  let source = url;
  if (new URL(url, location.href).origin === location.origin) {
    // This server's videos need the key: fetch them, play the bytes.
    const blob = await (await api(new URL(url, location.href).pathname)).blob();
    if (state.videoUrl) URL.revokeObjectURL(state.videoUrl);
    state.videoUrl = source = URL.createObjectURL(blob);
  }
  video.src = source;
  video.hidden = false;
  $("download").href = source;
  $("download").hidden = false;
}

async function submitJob(body, label) {
  showError("");
  const job = await (await api("/jobs", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  })).json();
  startWatching(job, label);
}

async function upload(input) {
  const form = new FormData();
  form.append("file", input.files[0]);
  return (await (await api("/uploads", { method: "POST", body: form })).json()).url;
}

async function main() {
  $("api-key").value = sessionStorage.getItem("apiKey") || "";
  $("api-key").addEventListener("input", () => {
    sessionStorage.setItem("apiKey", key());
    renderRecent();
  });
  const info = await (await fetch("/")).json();
  state.task = info.task;
  $("model").textContent = `${info.model.model || ""} · ${info.status}`;
  if (!info.jobs) {
    showError("this server has no job API (JOBS_ENABLED)");
    return;
  }
  const form = info.task === "lip-sync" ? $("lipsync-form") : $("t2v-form");
  form.hidden = false;
  $("t2v-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const [height, width, frames, steps] = $("preset").value.split("x").map(Number);
    const body = { prompt: $("prompt").value, height, width, num_frames: frames, num_inference_steps: steps,
                   seed: Number($("seed").value) };
    if ($("negative").value) body.negative_prompt = $("negative").value;
    submitJob(body, $("prompt").value.slice(0, 40)).catch((error) => showError(error.message));
  });
  $("lipsync-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      showError("");
      const [video, audio] = [await upload($("face")), await upload($("speech"))];
      await submitJob({ video_in: video, audio_in: audio }, $("face").files[0].name);
    } catch (error) {
      showError(error.message);
    }
  });
  $("cancel").addEventListener("click", () => {
    if (state.job) api(`/jobs/${state.job.job_id}/cancel`, { method: "POST" }).catch((e) => showError(e.message));
  });
  renderRecent();
}

main().catch((error) => showError(error.message));
