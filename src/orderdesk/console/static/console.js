// Show every <time datetime="…Z"> in the browser's time zone. The title attribute
// keeps the UTC time, and without this script the page shows UTC.
(function () {
  "use strict";

  var format = new Intl.DateTimeFormat(undefined, {
    year: "numeric",
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    timeZoneName: "short",
  });

  function localize(root) {
    var nodes = root.querySelectorAll("time[datetime]");
    for (var i = 0; i < nodes.length; i++) {
      var moment = new Date(nodes[i].getAttribute("datetime"));
      if (!isNaN(moment.getTime())) {
        nodes[i].textContent = format.format(moment);
        nodes[i].classList.add("local");
      }
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () {
      localize(document);
    });
  } else {
    localize(document);
  }
})();
