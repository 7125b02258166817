// facedata review: selection (click, shift-click, drag), keyboard shortcuts, decisions POSTed with the CSRF
// token. Plain JS, no dependencies (the app works offline).
(function () {
  "use strict";
  const token = document.querySelector('meta[name="csrf-token"]').content;
  const seen = document.querySelector('meta[name="seen"]').content;
  const body = document.body;
  const pageName = body.dataset.name || "";
  const status = document.getElementById("status");
  const selected = new Set();
  let anchor = null;
  let hovered = null;

  const faces = () => Array.from(document.querySelectorAll("main .faces .face"));
  const say = (text, bad) => { status.textContent = text; status.className = bad ? "bad" : "ok"; };

  function render() {
    for (const el of faces()) el.classList.toggle("selected", selected.has(el.dataset.face));
    if (selected.size) say(selected.size + " selected");
  }

  function toggle(el, on) {
    const f = el.dataset.face;
    if (on === undefined) on = !selected.has(f);
    if (on) selected.add(f); else selected.delete(f);
  }

  async function post(decision, force, url) {
    const payload = Object.assign({ seen: seen, force: !!force }, decision);
    say("saving...");
    let r;
    try {
      r = await fetch(url || "/api/decide", {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": token },
        body: JSON.stringify(payload),
      });
    } catch (e) { say("could not reach the app: " + e, true); return; }
    const data = await r.json().catch(() => ({}));
    if (r.status === 409) {
      if (window.confirm(data.error + "\n\nApply yours anyway?")) return post(decision, true, url);
      say("not applied: " + data.error, true);
      return;
    }
    if (!r.ok) { say(data.error || ("error " + r.status), true); return; }
    say("saved: " + data.review.action);
    window.location.reload();
  }

  function need() {
    if (!selected.size) { say("select faces first (click, shift-click or drag)", true); return null; }
    return Array.from(selected);
  }

  function ask(question) {
    const v = window.prompt(question, pageName);
    return v && v.trim() ? v.trim() : null;
  }

  const actions = {
    a() {
      let ids = Array.from(selected);
      if (!ids.length) ids = faces().filter((el) => el.closest('[data-section="grid"], [data-section="doubt"]')).map((el) => el.dataset.face);
      const name = pageName || ask("Accept as which identity?");
      if (name && ids.length) post({ action: "accept", face_ids: ids, target: name });
    },
    x() { const ids = need(); if (ids) post({ action: "reject", face_ids: ids, reason: "not_this_person" }); },
    f() { const ids = need(); if (ids) post({ action: "reject", face_ids: ids, reason: "not_a_face" }); },
    b() { const ids = need(); if (ids) post({ action: "reject", face_ids: ids, reason: "bad_quality" }); },
    m() { const ids = need(); if (!ids) return; const t = ask("Move the selected faces to identity:"); if (t) post({ action: "move", face_ids: ids, target: t }); },
    g() { const ids = need(); if (ids) post({ action: "merge", face_ids: ids }); },
    s() { const ids = need(); if (ids) post({ action: "split", face_ids: ids }); },
    n() {
      let ids = Array.from(selected);
      if (!ids.length && body.dataset.group) ids = faces().map((el) => el.dataset.face);
      if (!ids.length) { need(); return; }
      const t = ask("Name this cluster:");
      if (t) post({ action: "name", face_ids: ids, target: t, whole_clusters: true });
    },
    l() { const f = hovered || Array.from(selected)[0]; if (f) window.location.href = "/similar/" + f; else say("point at a face first", true); },
    o() { const f = hovered || Array.from(selected)[0]; if (f) window.location.href = "/face/" + f; },
    u() { post({ action: "undo", undoes: "last" }); },
    p() { window.location.href = "/pairs"; },
    q() { window.location.href = "/queue"; },
    v() { window.location.href = "/video"; },
    h() { window.location.href = "/"; },
  };

  function answer(same) {
    const pair = document.querySelector(".pair");
    if (!pair) { say("no pairs left", true); return; }
    post({ action: same ? "same" : "different", face_ids: [pair.dataset.a], other_face_ids: [pair.dataset.b] });
  }

  document.addEventListener("keydown", (e) => {
    if (e.target.closest && e.target.closest("input, textarea")) return;
    const help = document.getElementById("help");
    if (e.key === "?") { help.hidden = !help.hidden; return; }
    if (e.key === "Escape") { help.hidden = true; selected.clear(); render(); say(""); return; }
    if ((e.ctrlKey || e.metaKey) && e.key === "a") { e.preventDefault(); faces().forEach((el) => toggle(el, true)); render(); return; }
    if ((e.ctrlKey || e.metaKey) && e.key === "z") { e.preventDefault(); actions.u(); return; }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (body.dataset.page === "pairs" && (e.key === "y" || e.key === "n")) { answer(e.key === "y"); return; }
    if (e.key === "Enter") { actions.o(); return; }
    const act = actions[e.key];
    if (act) { e.preventDefault(); act(); }
  });

  // Selection: click toggles, shift-click selects the range from the last clicked face, a drag selects every
  // face its rectangle touches.
  let drag = null;
  const band = document.createElement("div");
  band.id = "band";
  band.hidden = true;
  body.appendChild(band);

  document.addEventListener("mousedown", (e) => {
    if (e.button !== 0 || body.dataset.page !== "faces" || e.target.closest("a, button, header, aside")) return;
    drag = { x: e.pageX, y: e.pageY, moved: false, additive: e.shiftKey || e.ctrlKey || e.metaKey };
  });
  document.addEventListener("mousemove", (e) => {
    const el = e.target.closest && e.target.closest(".face");
    hovered = el ? el.dataset.face : hovered;
    if (!drag) return;
    const w = Math.abs(e.pageX - drag.x), h = Math.abs(e.pageY - drag.y);
    if (!drag.moved && w + h < 8) return;
    drag.moved = true;
    const left = Math.min(e.pageX, drag.x), top = Math.min(e.pageY, drag.y);
    Object.assign(band.style, { left: left + "px", top: top + "px", width: w + "px", height: h + "px" });
    band.hidden = false;
    if (!drag.additive) selected.clear();
    for (const f of faces()) {
      const r = f.getBoundingClientRect();
      const fx = r.left + window.scrollX, fy = r.top + window.scrollY;
      if (fx < left + w && fx + r.width > left && fy < top + h && fy + r.height > top) toggle(f, true);
    }
    render();
  });
  document.addEventListener("mouseup", (e) => {
    const was = drag;
    drag = null;
    band.hidden = true;
    if (!was || was.moved) return;
    const el = e.target.closest(".face");
    if (!el || body.dataset.page !== "faces") return;
    const all = faces();
    if (e.shiftKey && anchor !== null) {
      const i = all.findIndex((x) => x.dataset.face === anchor), j = all.indexOf(el);
      if (i >= 0 && j >= 0) for (let k = Math.min(i, j); k <= Math.max(i, j); k++) toggle(all[k], true);
    } else {
      toggle(el);
      anchor = el.dataset.face;
    }
    render();
  });
  document.addEventListener("dblclick", (e) => {
    const el = e.target.closest(".face");
    if (el) window.location.href = "/face/" + el.dataset.face;
  });

  document.addEventListener("click", (e) => {
    const cand = e.target.closest("button.name-candidate");
    if (cand) {
      const t = ask("Who is this? Their best frames join the dataset under this name:");
      if (t) post({ candidate: cand.dataset.candidate, target: t }, false, "/api/name-video");
    }
    const undo = e.target.closest("button.undo");
    if (undo) post({ action: "undo", undoes: undo.dataset.undo });
    if (e.target.closest("#help-button")) document.getElementById("help").hidden = !document.getElementById("help").hidden;
    const pair = e.target.closest(".pair");
    if (pair && e.target.closest("button.yes")) answer(true);
    if (pair && e.target.closest("button.no")) answer(false);
  });
})();
