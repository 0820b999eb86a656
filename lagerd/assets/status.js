// Keeps the page live without reloads: the server-rendered <main> is
// fetched again every 2 s (one renderer, lagerd's), and every supply or
// battery net gets a live reading from its monitor stream, opened with
// observe=1 so that the page never takes a role or refuses anyone.
// Only this box is ever asked: every URL is relative.
(function () {
  "use strict";
  var main = document.getElementById("main");
  var live = document.getElementById("live");
  var readings = {};
  var watching = {};
  // Browsers allow six connections per host; leave two for the page.
  var MAX_WATCHES = 4;

  function text(net, state) {
    var on = state.enabled ? "ON" : "OFF";
    if (state.terminal_voltage !== undefined) {
      return fmt(state.terminal_voltage) + " V · " + fmt(state.current) + " A · SOC " +
        fmt(state.soc) + "% · " + on;
    }
    return fmt(state.voltage) + " V · " + fmt(state.current) + " A · " + on +
      " (set " + fmt(state.voltage_set) + " V)";
  }

  function fmt(n) {
    return typeof n === "number" ? n.toFixed(3) : "?";
  }

  function paint() {
    var cells = main.querySelectorAll("[data-reading]");
    for (var i = 0; i < cells.length; i++) {
      var net = cells[i].getAttribute("data-reading");
      if (readings[net] !== undefined) {
        cells[i].textContent = readings[net];
      }
    }
  }

  function watch(net, role) {
    if (watching[net] || Object.keys(watching).length >= MAX_WATCHES) {
      return;
    }
    watching[net] = true;
    var path = (role === "battery" ? "/battery" : "/supply") + "/monitor?interval=1&observe=1&netname=" +
      encodeURIComponent(net);
    var again = function () {
      delete watching[net];
      setTimeout(function () { watch(net, role); }, 3000);
    };
    fetch(path, { cache: "no-store" }).then(function (response) {
      if (!response.ok || !response.body) {
        readings[net] = "no reading (HTTP " + response.status + ")";
        paint();
        return again();
      }
      var reader = response.body.getReader();
      var decoder = new TextDecoder();
      var pending = "";
      var pump = function () {
        return reader.read().then(function (chunk) {
          if (chunk.done) {
            return again();
          }
          pending += decoder.decode(chunk.value, { stream: true });
          var lines = pending.split("\n");
          pending = lines.pop();
          lines.forEach(function (line) {
            if (!line) { return; }
            var event = JSON.parse(line);
            if (event.event === "state" && event.state) {
              readings[net] = text(net, event.state);
            } else if (event.event === "idle" || event.event === "error") {
              readings[net] = event.message;
            }
          });
          paint();
          return pump();
        });
      };
      return pump();
    }).catch(again);
  }

  function watchAll() {
    var cells = main.querySelectorAll("[data-reading]");
    for (var i = 0; i < cells.length; i++) {
      watch(cells[i].getAttribute("data-reading"), cells[i].getAttribute("data-role"));
    }
  }

  function refresh() {
    fetch("/?part=main", { cache: "no-store" }).then(function (response) {
      if (!response.ok) { throw new Error("HTTP " + response.status); }
      return response.text();
    }).then(function (html) {
      main.innerHTML = html;
      paint();
      watchAll();
      live.textContent = "live · updated " + new Date().toLocaleTimeString();
      live.className = "ok";
    }).catch(function (e) {
      live.textContent = "box not answering (" + e.message + "); retrying";
      live.className = "bad";
    }).then(function () {
      setTimeout(refresh, 2000);
    });
  }

  live.textContent = "live";
  watchAll();
  setTimeout(refresh, 2000);
})();
