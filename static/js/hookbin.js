// Hookbin's page behaviour. Loaded as a file (the CSP forbids inline script).
// The leading semicolon matters: the bundle concatenates files, and the one before ends in "})()".
;(function () {
  "use strict";

  // Resume the live stream after the newest request already on the page: the htmx ws extension
  // calls htmx.createWebSocket on every (re)connect, so a dropped connection fills in exactly the
  // requests it missed.
  htmx.createWebSocket = function (url) {
    var u = new URL(url, window.location.href);
    var list = document.getElementById("request-list");
    var newest = document.querySelector("#request-list .row");
    var after = newest ? newest.dataset.id : (list && list.dataset.start);
    if (after) { u.searchParams.set("after", after); } else { u.searchParams.delete("after"); }
    return new WebSocket(u.toString());
  };

  function setLive(state, text) {
    var el = document.getElementById("live-status");
    if (!el) { return; }
    el.dataset.state = state;
    el.textContent = text;
  }

  document.addEventListener("htmx:wsConnecting", function () { setLive("connecting", "connecting…"); });
  document.addEventListener("htmx:wsOpen", function () { setLive("live", "live"); });
  document.addEventListener("htmx:wsClose", function () { setLive("down", "reconnecting…"); });
  document.addEventListener("htmx:wsError", function () { setLive("down", "reconnecting…"); });

  function refreshList() {
    var rows = document.querySelectorAll("#request-list .row");
    var seen = {};
    rows.forEach(function (row) {
      if (seen[row.id]) { row.remove(); } else { seen[row.id] = true; }
    });
    var empty = document.getElementById("empty-note");
    if (empty) { empty.hidden = rows.length > 0; }
    formatTimes(document);
  }

  document.addEventListener("htmx:wsAfterMessage", function () {
    var count = document.getElementById("request-count");
    if (count) { count.textContent = String(parseInt(count.textContent, 10) + 1); }
    refreshList();
  });

  document.addEventListener("htmx:afterSwap", function (event) {
    refreshList();
    var target = event.detail.target;
    if (target && target.id === "detail") {
      document.querySelectorAll("#request-list .row.selected").forEach(function (r) { r.classList.remove("selected"); });
      var article = target.querySelector(".detail");
      var row = article && document.getElementById("req-" + article.dataset.id);
      if (row) { row.classList.add("selected"); }
    }
  });

  // Local, readable times; the ISO value stays in the datetime attribute.
  function formatTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (t) {
      if (t.dataset.formatted) { return; }
      var d = new Date(t.getAttribute("datetime"));
      if (!isNaN(d)) { t.textContent = d.toLocaleString(); t.title = t.getAttribute("datetime"); }
      t.dataset.formatted = "1";
    });
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) { return; }
    var source = document.querySelector(button.dataset.copy);
    var text = source.value !== undefined ? source.value : source.textContent;
    var done = function () { button.textContent = "Copied"; setTimeout(function () { button.textContent = "Copy"; }, 1500); };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done);
    } else {
      if (source.select) { source.select(); }
      document.execCommand("copy");
      done();
    }
  });

  document.addEventListener("submit", function (event) {
    var form = event.target.closest("form.confirm");
    if (form && !window.confirm(form.dataset.confirm)) { event.preventDefault(); }
  });

  document.addEventListener("DOMContentLoaded", function () { refreshList(); });
})();
