// Live drives table: the server sends the rendered table (server-sent events)
// whenever it changes; the browser reconnects by itself if the daemon restarts.
(function () {
  var box = document.getElementById("drives");
  if (!box || !window.EventSource) return;
  var source = new EventSource(box.getAttribute("data-events"));
  source.addEventListener("drives", function (e) { box.innerHTML = e.data; });
})();
