// The labelling page and the instructions editor of `rlaif service`.
// Every text that came from a model or a person is put on the page with textContent, never
// as markup, so a response holding <script> or <img onerror=...> shows as those characters.
// Who labels is decided by the server from the session cookie set at login (HttpOnly: this
// script never sees the token again), never by anything this script sends.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const PAIR_KEYS = { "1": "a", a: "a", "2": "b", b: "b", "3": "tie", t: "tie", "4": "fail", f: "fail" };

  async function api(path, options) {
    const response = await fetch(path, Object.assign({ credentials: "same-origin" }, options || {}));
    if (!response.ok) {
      let detail = response.status + " " + response.statusText;
      try {
        const body = await response.json();
        detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      } catch (e) { /* keep the status line */ }
      throw new Error(detail);
    }
    return response.json();
  }

  function show(section) {
    for (const id of ["login", "work", "done", "other-role"]) $(id).hidden = id !== section;
  }

  // --- the labelling page -------------------------------------------------------------------

  function labelPage() {
    const state = { item: null, choice: null, ranking: [], busy: false };

    function progressText(p) {
      const mine = p.mine === undefined || p.mine === null ? "" : "you: " + p.mine + " labelled · ";
      return mine + "queue: " + p.complete + " of " + p.items + " items complete";
    }

    function setStatus(text) { $("status").textContent = text || ""; }

    function ready() {
      if (!state.item) return false;
      if (state.choice === "fail") return true;
      if (state.item.responses.length === 2) return state.choice !== null;
      return state.ranking.length === state.item.responses.length;
    }

    function render() {
      const k = state.item ? state.item.responses.length : 0;
      document.querySelectorAll("[data-choice]").forEach((button) => {
        const on = button.dataset.choice === state.choice;
        button.classList.toggle("selected", on);
        button.setAttribute("aria-pressed", on ? "true" : "false");
      });
      document.querySelectorAll(".response").forEach((column, index) => {
        const place = state.ranking.indexOf(index);
        const chosen = k === 2 ? (state.choice === "a" && index === 0) || (state.choice === "b" && index === 1)
                               : place >= 0;
        column.classList.toggle("chosen", chosen);
        column.querySelector(".rank").textContent = k > 2 && place >= 0 ? "#" + (place + 1) : "";
      });
      $("ranking").textContent = state.ranking.map((i) => String(i + 1)).join(" > ");
      $("submit").disabled = !ready() || state.busy;
    }

    function showItem(data) {
      $("progress").textContent = progressText(data.progress);
      $("done-progress").textContent = progressText(data.progress);
      state.item = data.item;
      state.choice = null;
      state.ranking = [];
      $("note").value = "";
      if (document.activeElement instanceof HTMLElement) document.activeElement.blur();
      if (!state.item) { show("done"); return; }
      show("work");
      $("prompt").textContent = state.item.prompt;
      const row = $("responses");
      row.replaceChildren();
      const k = state.item.responses.length;
      state.item.responses.forEach((text, index) => {
        const column = document.createElement("div");
        column.className = "response";
        column.dataset.index = String(index);
        const title = document.createElement("h3");
        title.textContent = k === 2 ? (index === 0 ? "A" : "B") : "Response " + (index + 1);
        const rank = document.createElement("span");
        rank.className = "rank";
        title.appendChild(rank);
        const body = document.createElement("div");
        body.className = "text response-text";
        body.textContent = text;
        column.append(title, body);
        row.appendChild(column);
      });
      $("pair-controls").hidden = k !== 2;
      $("rank-controls").hidden = k === 2;
      render();
    }

    async function loadNext() {
      setStatus("");
      try {
        showItem(await api("/label/api/next"));
      } catch (error) {
        setStatus("Could not load the next item: " + error.message);
      }
    }

    function choose(choice) {
      if (!state.item) return;
      state.choice = choice;
      if (choice !== "fail") state.ranking = [];
      render();
    }

    function rank(index) {
      if (!state.item || index >= state.item.responses.length || state.ranking.includes(index)) return;
      state.choice = null;
      state.ranking.push(index);
      render();
    }

    async function submit() {
      if (!ready() || state.busy) return;
      state.busy = true;
      render();
      const k = state.item.responses.length;
      const body = {
        item_id: state.item.id,
        choice: state.choice === "fail" ? "fail" : k === 2 ? state.choice : "rank",
        ranking: k > 2 && state.choice !== "fail" ? state.ranking : null,
        note: $("note").value,
      };
      try {
        await api("/label/api/votes", {
          method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
        });
        state.busy = false;
        await loadNext();
      } catch (error) {
        state.busy = false;
        setStatus("Not saved: " + error.message);
        render();
      }
    }

    function onKey(event) {
      if (event.ctrlKey || event.metaKey || event.altKey) return;
      const inText = event.target instanceof HTMLTextAreaElement || event.target instanceof HTMLInputElement;
      if (event.key === "Enter" && !event.shiftKey && !(event.target instanceof HTMLInputElement)) {
        if (!$("work").hidden) { event.preventDefault(); submit(); }
        return;
      }
      if (inText || $("work").hidden || !state.item) return;
      const key = event.key.toLowerCase();
      const k = state.item.responses.length;
      if (k === 2 && PAIR_KEYS[key]) { event.preventDefault(); choose(PAIR_KEYS[key]); return; }
      if (k > 2) {
        if (key === "f") { event.preventDefault(); choose("fail"); return; }
        if (key === "backspace") { event.preventDefault(); state.ranking.pop(); render(); return; }
        if (/^[1-9]$/.test(key)) { event.preventDefault(); rank(Number(key) - 1); }
      }
    }

    function start(me) {
      if (me.role === "operator") { $("other-name").textContent = me.name; show("other-role"); return; }
      $("who").textContent = me.name;
      loadNext();
      api("/label/api/instructions").then((data) => { $("instructions-text").textContent = data.text; })
        .catch(() => { $("instructions-text").textContent = "(instructions could not be loaded)"; });
    }

    function login() { show("login"); $("token-input").focus(); }

    document.querySelectorAll("[data-choice]").forEach((button) =>
      button.addEventListener("click", () => choose(button.dataset.choice)));
    document.querySelector("[data-action=undo]").addEventListener("click", () => { state.ranking.pop(); render(); });
    $("responses").addEventListener("click", (event) => {
      const column = event.target.closest(".response");
      if (!column || !state.item) return;
      const index = Number(column.dataset.index);
      if (state.item.responses.length === 2) choose(index === 0 ? "a" : "b"); else rank(index);
    });
    $("submit").addEventListener("click", submit);
    $("again").addEventListener("click", loadNext);
    $("switch").addEventListener("click", async () => {
      try { await api("/label/api/logout", { method: "POST" }); } catch (e) { /* logged out anyway */ }
      login();
    });
    $("login-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const token = $("token-input").value.trim();
      $("token-input").value = "";
      try {
        const me = await api("/label/api/login", {
          method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ token: token }),
        });
        $("login-status").textContent = "";
        if (location.pathname !== "/label") history.replaceState(null, "", "/label");
        start(me);
      } catch (error) {
        $("login-status").textContent = "Not logged in: " + error.message;
      }
    });
    document.addEventListener("keydown", onKey);

    if (location.pathname === "/label/login") login();
    else api("/label/api/me").then(start).catch(login);
  }

  // --- the instructions page ----------------------------------------------------------------

  function instructionsPage() {
    if (!$("edit")) return;
    $("edit").addEventListener("click", () => {
      $("instructions-edit").value = $("instructions-text").textContent;
      $("editor").hidden = false;
      $("instructions-edit").focus();
    });
    $("save").addEventListener("click", async () => {
      $("save-status").textContent = "Saving…";
      try {
        const saved = await api("/label/api/instructions", {
          method: "PUT", headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ text: $("instructions-edit").value }),
        });
        $("instructions-text").textContent = saved.text;
        $("save-status").textContent = "Saved.";
        $("editor").hidden = true;
      } catch (error) {
        $("save-status").textContent = "Not saved: " + error.message;
      }
    });
  }

  const page = document.body.dataset.page;
  if (page === "label") labelPage();
  else if (page === "instructions") instructionsPage();
})();
