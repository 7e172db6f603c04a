// Berth's web UI: the only script. Copy buttons: <button data-copy="text">.
"use strict";
document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button || !navigator.clipboard) return;
  navigator.clipboard.writeText(button.dataset.copy).then(
    () => { button.textContent = "Copied"; setTimeout(() => { button.textContent = "Copy"; }, 1500); },
    () => { button.textContent = "Select and copy"; }
  );
});

// Robot forms: every rule line is checked by the server as it is typed
// (<textarea data-check-rules aria-describedby="...">), the verdict shown in the described element.
let ruleTimer = null;
document.addEventListener("input", (event) => {
  const area = event.target.closest("textarea[data-check-rules]");
  if (!area) return;
  clearTimeout(ruleTimer);
  ruleTimer = setTimeout(async () => {
    const out = document.getElementById(area.getAttribute("aria-describedby"));
    if (!out) return;
    const lines = area.value.split("\n").map((l) => l.trim()).filter((l) => l.length > 0);
    const verdicts = await Promise.all(lines.map(async (line) => {
      const response = await fetch("/rules/check?" + new URLSearchParams({ line }), { credentials: "same-origin" });
      return response.ok ? response.json() : { ok: false, text: "could not check" };
    }));
    out.replaceChildren(...verdicts.map((v) => {
      const item = document.createElement("span");
      item.className = v.ok ? "rule-ok" : "error";
      item.textContent = (v.ok ? "✓ " : "✗ ") + v.text;
      return item;
    }));
  }, 250);
});
