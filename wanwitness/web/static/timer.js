// The running timer of each agent's state on the Now page. The page reads without it.
(function () {
  "use strict";
  function fmt(ms) {
    var s = Math.max(0, Math.floor(ms / 1000));
    var d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600);
    var m = Math.floor(s % 3600 / 60), sec = s % 60;
    function two(n) { return (n < 10 ? "0" : "") + n; }
    if (d) return d + "d " + two(h) + "h " + two(m) + "m";
    if (h) return h + "h " + two(m) + "m " + two(sec) + "s";
    if (m) return m + "m " + two(sec) + "s";
    return sec + "s";
  }
  // Counted from the server's clock when it rendered the page (data-now), not from
  // this device's clock, which may be off by minutes.
  var cards = document.querySelector("[data-now]");
  var serverNow = cards ? Number(cards.getAttribute("data-now")) : NaN;
  var loaded = Date.now();
  var timers = document.querySelectorAll(".timer[data-since]");
  function tick() {
    var now = isNaN(serverNow) ? Date.now() : serverNow + (Date.now() - loaded);
    timers.forEach(function (el) {
      var since = Date.parse(el.getAttribute("data-since"));
      if (!isNaN(since)) el.textContent = "(" + fmt(now - since) + ")";
    });
  }
  if (timers.length) { tick(); setInterval(tick, 1000); }

  // Live: when an agent's state changes, show the page anew (the server renders it).
  if (cards && window.EventSource) {
    var shown = {};
    document.querySelectorAll("[data-agent]").forEach(function (el) {
      shown[el.getAttribute("data-agent")] = el.getAttribute("data-state");
    });
    var events = new EventSource("/api/v1/events");
    events.addEventListener("agents", function (e) {
      var agents = JSON.parse(e.data);
      var changed = agents.some(function (a) { return shown[a.id] !== a.state; });
      if (changed) { events.close(); window.location.reload(); }
    });
  }
})();
