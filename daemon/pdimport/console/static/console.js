// Live parts of a page: an element with data-events="/events?..." and
// data-event="NAME" is replaced by each server-sent event NAME. The server
// sends one when the daemon's state changed, never on a timer; the browser
// reconnects by itself if the daemon restarts.
(function () {
  if (!window.EventSource) return;
  var boxes = document.querySelectorAll("[data-events]");
  for (var i = 0; i < boxes.length; i++) {
    (function (box) {
      var source = new EventSource(box.getAttribute("data-events"));
      source.addEventListener(box.getAttribute("data-event"), function (e) {
        box.innerHTML = e.data;
        box.setAttribute("data-updates", String(Number(box.getAttribute("data-updates") || 0) + 1));
      });
    })(boxes[i]);
  }
})();
