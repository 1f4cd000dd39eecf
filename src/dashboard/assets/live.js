// Keeps every [data-live] element up to date from its server-sent event stream: the
// server sends the element's new HTML (rendered and escaped on the server) whenever
// what it shows changes, and an `alive` event every few seconds. EventSource
// reconnects by itself, e.g. after a controller restart; the element is dimmed while
// the stream is down. The header says how fresh the page is ("live · updated 3s ago",
// "disconnected"), and running times tick every second.
var heard = Date.now();
var down = false;
var ended = false;
var streams = document.querySelectorAll("[data-live]");
streams.forEach(function (el) {
  var source = new EventSource(el.dataset.live);
  var alive = function () {
    heard = Date.now();
    down = false;
    el.classList.remove("stale");
  };
  source.addEventListener("open", alive);
  source.addEventListener("alive", alive);
  source.addEventListener("html", function (e) {
    el.innerHTML = e.data;
    alive();
  });
  source.addEventListener("end", function () {
    ended = true;
    source.close();
  });
  source.onerror = function () {
    if (!ended) {
      down = true;
      el.classList.add("stale");
    }
  };
});

function span(ms) {
  var s = Math.max(0, Math.floor(ms / 1000));
  var h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60;
  if (h > 0) return h + "h " + m + "m";
  if (m > 0) return m + "m " + (s % 60) + "s";
  return s + "s";
}

function tick() {
  var now = Date.now();
  var liveness = document.getElementById("liveness");
  if (liveness && streams.length > 0) {
    var ago = Math.round((now - heard) / 1000);
    // The server says it is alive every 5 s: 15 s of silence is a lost connection.
    var lost = down || (!ended && ago > 15);
    liveness.textContent = ended
      ? "final · updated " + ago + "s ago"
      : lost
        ? "disconnected: reconnecting · last update " + ago + "s ago"
        : "live · updated " + ago + "s ago";
    liveness.classList.toggle("stale", lost);
    liveness.dataset.state = ended ? "final" : lost ? "disconnected" : "live";
  }
  document.querySelectorAll("[data-since]").forEach(function (el) {
    el.textContent = span(now - Number(el.dataset.since));
  });
  document.querySelectorAll(".until[data-until]").forEach(function (el) {
    el.textContent = span(Number(el.dataset.until) - now);
  });
}
tick();
setInterval(tick, 1000);
