// Keeps every [data-live] element up to date from its server-sent event stream: the
// server sends the element's new HTML (rendered and escaped on the server) whenever
// what it shows changes. EventSource reconnects by itself, e.g. after a controller
// restart; the element is dimmed while the stream is down.
document.querySelectorAll("[data-live]").forEach(function (el) {
  var source = new EventSource(el.dataset.live);
  source.addEventListener("html", function (e) {
    el.innerHTML = e.data;
    el.classList.remove("stale");
  });
  source.addEventListener("end", function () {
    source.close();
  });
  source.onerror = function () {
    el.classList.add("stale");
  };
});
