// The page's only script: read the form, POST /api/generate, append each streamed token.
// The server answers newline-delimited JSON: {"seed"}, then {"token"} per token, then {"done"}.
"use strict";

const $ = (id) => document.getElementById(id);
let running = null; // the AbortController of the generation in progress

function setState(state) {
  document.body.dataset.state = state; // "idle", "generating", "done", "stopped", "error"
  $("generate").disabled = state === "generating";
  $("stop").disabled = state !== "generating";
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function describeModel() {
  try {
    const response = await fetch("/api/model");
    const model = await response.json();
    const t = model.training || {};
    $("model-info").textContent =
      `A GPT of ${model.parameters.toLocaleString()} parameters, ${model.n_layers} layers, ` +
      `reading ${model.context_length} ${model.tokenizer} at a time (vocabulary ${model.vocab_size})` +
      (t.steps ? `, trained ${t.steps} steps on ${t.data} (validation loss ${t.val_loss}).` : ".");
    $("vocabulary").textContent = JSON.stringify(model.characters).slice(1, -1); // "\n" for the newline
    $("top_k").max = model.vocab_size;
    $("max_new_tokens").max = model.limits.max_new_tokens;
    $("prompt").maxLength = model.limits.max_prompt_chars;
    $("temperature").max = model.limits.max_temperature;
    // The server's defaults, so that the page and a request without these fields agree.
    for (const name of ["temperature", "top_p", "max_new_tokens"]) {
      $(name).value = model.defaults[name];
      if ($(`${name}-value`)) $(`${name}-value`).textContent = model.defaults[name];
    }
  } catch (err) {
    $("model-info").textContent = `Could not read the model's description: ${err}`;
  }
}

function requestBody() {
  const optionalInt = (id) => ($(id).value.trim() === "" ? null : Number($(id).value));
  return {
    prompt: $("prompt").value,
    temperature: Number($("temperature").value),
    top_k: optionalInt("top_k"),
    top_p: Number($("top_p").value),
    max_new_tokens: Number($("max_new_tokens").value),
    seed: optionalInt("seed"),
  };
}

function handleEvent(event) {
  if (event.token !== undefined) {
    $("output-generated").textContent += event.token;
  } else if (event.seed !== undefined) {
    $("status").textContent = `Generating with seed ${event.seed}…`;
    $("status").dataset.seed = event.seed;
  } else if (event.done) {
    const rate = event.seconds > 0 ? ` (${Math.round(event.tokens / event.seconds)} tokens/s)` : "";
    const why = { max_new_tokens: "", time_limit: " — stopped at the time limit", shutdown: " — the server is shutting down" };
    $("status").textContent =
      `${event.tokens} tokens in ${event.seconds.toFixed(2)} s${rate}, seed ${$("status").dataset.seed}${why[event.reason] || ""}`;
  } else if (event.error) {
    throw new Error(event.error);
  }
}

async function generate(submit) {
  submit.preventDefault();
  if (running) return;
  showError("");
  const body = requestBody();
  $("output-prompt").textContent = body.prompt;
  $("output-generated").textContent = "";
  running = new AbortController();
  setState("generating");
  try {
    const response = await fetch("/api/generate", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      signal: running.signal,
    });
    if (!response.ok) {
      const problem = await response.json().catch(() => ({ error: response.statusText }));
      throw new Error(problem.error || `HTTP ${response.status}`);
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let pending = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      pending += value;
      const lines = pending.split("\n");
      pending = lines.pop(); // a line cut between two chunks waits for the rest
      lines.filter((line) => line).forEach((line) => handleEvent(JSON.parse(line)));
    }
    setState("done");
  } catch (err) {
    if (err.name === "AbortError") {
      $("status").textContent = `Stopped after ${$("output-generated").textContent.length} characters.`;
      setState("stopped");
    } else {
      showError(err.message);
      setState("error");
    }
  } finally {
    running = null;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  for (const id of ["temperature", "top_p"]) {
    $(id).addEventListener("input", () => { $(`${id}-value`).textContent = $(id).value; });
  }
  $("generate-form").addEventListener("submit", generate);
  $("stop").addEventListener("click", () => running && running.abort());
  setState("idle");
  describeModel();
});
