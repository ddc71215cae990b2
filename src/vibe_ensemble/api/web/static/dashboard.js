// Vibe Ensemble dashboard: keeps the page live over the event feed, with no framework.
//
// The page marks its live region with data-fragment (a URL that returns it, rendered and escaped by
// the server), data-stream (the event feed, starting after the last event rendered; followed over a
// WebSocket, see listen) and data-events (the event names to listen to). On each event the region is
// fetched again and swapped in whole. A page opens one feed for all its regions (see followAll).
// Nothing from an event is ever inserted into the page: events only say "look again".
"use strict";

(function () {
  function setStatus(state, text) {
    var status = document.getElementById("live-status");
    if (status) {
      status.dataset.state = state;
      status.textContent = text;
    }
  }

  var streaming = false; // the page's event stream is open
  var failing = new Set(); // the regions whose last fetch failed

  function failed(region, text) {
    failing.add(region);
    setStatus("error", text);
  }

  // The badge says "update failed" while any region's last fetch failed; once each has worked
  // again, it says "live" again (the stream being open).
  function recovered(region) {
    failing.delete(region);
    var status = document.getElementById("live-status");
    if (streaming && failing.size === 0 && status && status.dataset.state === "error") {
      setStatus("live", "live");
    }
  }

  function follow(region) {
    var busy = false;
    var again = false;
    var timer = null;

    // A region may say when time alone changes it (a deadline passing): look again then.
    function schedule() {
      if (timer !== null) {
        clearTimeout(timer);
        timer = null;
      }
      var marker = region.querySelector("[data-recheck-s]");
      var seconds = marker ? Number(marker.dataset.recheckS) : NaN;
      if (seconds > 0) {
        timer = setTimeout(refresh, Math.min(seconds, 3600) * 1000);
      }
    }

    async function refresh() {
      if (busy) {
        again = true;
        return;
      }
      busy = true;
      try {
        do {
          again = false;
          var response = await fetch(region.dataset.fragment, {
            credentials: "same-origin",
            headers: { Accept: "text/html" },
            cache: "no-store",
          });
          if (response.status === 401) {
            window.location.assign("/login");
            return;
          }
          if (!response.ok) {
            failed(region, "update failed (" + response.status + ")");
            return;
          }
          var html = await response.text();
          var parsed = new DOMParser().parseFromString(html, "text/html");
          region.replaceChildren.apply(region, Array.from(parsed.body.childNodes));
          region.dataset.updated = String(Date.now());
          recovered(region);
          schedule();
        } while (again);
      } catch (err) {
        failed(region, "update failed");
      } finally {
        busy = false;
      }
    }

    schedule();
    return refresh;
  }

  // The event families a region follows ("agent.*", "message.sent", …), from its stream's `types`.
  function families(url) {
    return url.searchParams.getAll("types");
  }

  function matches(name, patterns) {
    return patterns.some(function (pattern) {
      return pattern.slice(-2) === ".*" ? name.indexOf(pattern.slice(0, -1)) === 0 : name === pattern;
    });
  }

  // One feed per page, whatever its number of live regions: regions whose streams differ only in
  // their `types` share one feed of the union of their types; each still refreshes only on the
  // event names of its own families.
  function followAll(regions) {
    var groups = new Map();
    regions.forEach(function (region) {
      var url = new URL(region.dataset.stream, window.location.href);
      var own = families(url);
      url.searchParams.delete("types");
      var key = url.toString();
      if (!groups.has(key)) {
        groups.set(key, { url: url, types: [], all: false, regions: [] });
      }
      var group = groups.get(key);
      group.all = group.all || own.length === 0;
      own.forEach(function (type) {
        if (group.types.indexOf(type) < 0) {
          group.types.push(type);
        }
      });
      group.regions.push({ refresh: follow(region), families: own, events: region.dataset.events || "" });
    });
    groups.forEach(function (group) {
      (group.all ? [] : group.types).forEach(function (type) {
        group.url.searchParams.append("types", type);
      });
      listen(group.url.toString(), group.regions);
    });
  }

  // Refresh each region that follows an event of this name (a region without types in its stream
  // follows every event it names).
  function dispatch(regions, name) {
    regions.forEach(function (region) {
      var names = region.events.split(" ");
      if (names.indexOf(name) >= 0 && (region.families.length === 0 || matches(name, region.families))) {
        region.refresh();
      }
    });
  }

  // The page follows the event log over a WebSocket (/api/v1/events/ws, the session cookie
  // authenticating it). A browser's WebSockets are not taken from its six HTTP/1.1 connections to
  // a host, as an EventSource's stream is: with a stream each, six dashboard tabs held all six, and
  // no tab could fetch anything again. When three sockets in a row never open (a proxy on the way
  // refuses the upgrade), the page falls back to the Server-Sent Events stream.
  function listen(stream, regions) {
    var url = new URL(stream, window.location.href);
    url.pathname = url.pathname.replace(/\/stream$/, "/ws");
    url.protocol = window.location.protocol === "https:" ? "wss:" : "ws:";
    var after = url.searchParams.get("after"); // the last event this page has taken in
    var delay = 1000;
    var upgraded = false; // a socket of this page has ever opened: the way to the server takes them
    var refused = 0; // sockets in a row that never opened (the upgrade refused on the way)

    function reconnect() {
      streaming = false;
      setStatus("connecting", "reconnecting…");
      window.setTimeout(open, delay);
      delay = Math.min(delay * 2, 30000);
    }

    function open() {
      if (after !== null) {
        url.searchParams.set("after", after);
      }
      var socket = new WebSocket(url.toString());
      var opened = false;
      socket.onopen = function () {
        opened = upgraded = true;
        refused = 0;
      };
      socket.onmessage = function (message) {
        var data = {};
        try {
          data = JSON.parse(message.data);
        } catch (err) {
          return;
        }
        if (data.type === "ready") {
          if (after === null) {
            after = String(data.last_id); // following from now on: from here, after a drop
          }
          delay = 1000;
          streaming = true;
          setStatus("live", "live");
        } else if (data.type === "event" && data.event) {
          after = String(data.event.id);
          dispatch(regions, data.event.type);
        }
      };
      socket.onclose = function (event) {
        if (event.code === 4401) {
          streaming = false;
          window.location.assign("/login"); // logged out, or the token revoked or expired
          return;
        }
        if (event.code === 4400) {
          // The cursor is not in this server's log (a restored or another database): follow from
          // now on, and look again at everything once.
          after = null;
          url.searchParams.delete("after");
          regions.forEach(function (region) {
            region.refresh();
          });
        }
        if (event.code === 4403 || event.code === 4404) {
          streaming = false;
          setStatus("off", "disconnected");
          return;
        }
        // Only sockets that never opened say the upgrade is refused; one the server opened and then
        // closed (its feeds cap reached, shutting down, the database away) is tried again later.
        if (!opened && !upgraded && ++refused >= 3) {
          listenSSE(url, after, regions);
          return;
        }
        reconnect();
      };
    }

    open();
  }

  function listenSSE(socketUrl, after, regions) {
    var url = new URL(socketUrl.toString());
    url.protocol = window.location.protocol;
    url.pathname = url.pathname.replace(/\/ws$/, "/stream");
    if (after !== null) {
      url.searchParams.set("after", after);
    }
    var source = new EventSource(url.toString());
    source.onopen = function () {
      streaming = true;
      setStatus("live", "live");
    };
    source.onerror = function () {
      streaming = false;
      if (source.readyState === EventSource.CLOSED) {
        setStatus("off", "disconnected");
        regions[0].refresh(); // a 401 here sends the browser to the login page
      } else {
        setStatus("connecting", "reconnecting…");
      }
    };
    // The server ends a stream with a named "error" event: {code, message, last_id}.
    source.addEventListener("error", function (event) {
      if (!event.data) {
        return;
      }
      var reason = {};
      try {
        reason = JSON.parse(event.data);
      } catch (err) {
        reason = {};
      }
      if (reason.code === "unauthenticated") {
        source.close();
        window.location.assign("/login");
      }
    });
    var names = new Set();
    regions.forEach(function (region) {
      region.events.split(" ").forEach(function (name) {
        if (name && !names.has(name)) {
          names.add(name);
          source.addEventListener(name, function () {
            dispatch(regions, name);
          });
        }
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    followAll(Array.from(document.querySelectorAll("[data-live]")));
    document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
      select.addEventListener("change", function () {
        select.form.submit();
      });
    });
    // Confirmation for destructive forms, also inside regions swapped in later.
    document.addEventListener("submit", function (event) {
      var form = event.target;
      if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
        event.preventDefault();
      }
    });
  });
})();
