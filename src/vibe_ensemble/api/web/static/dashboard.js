// Vibe Ensemble dashboard: keeps the page live over the event feed, with no framework.
//
// The page marks its live region with data-fragment (a URL that returns it, rendered and escaped by
// the server), data-stream (the Server-Sent Events feed, starting after the last event rendered) and
// data-events (the event names to listen to). On each event the region is fetched again and swapped
// in whole. A page opens one stream for all its regions (see followAll). Nothing from an event is
// ever inserted into the page: events only say "look again".
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

  // One EventSource per page, whatever its number of live regions: a browser keeps at most six
  // HTTP/1.1 connections to a host, and every open stream holds one until the tab closes. With a
  // stream per region, three boards (two regions each) held all six, and every fragment fetch and
  // every other page of the dashboard then waited forever. Regions whose streams differ only in
  // their `types` share one stream of the union of their types; each still refreshes only on the
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

  function listen(stream, regions) {
    var source = new EventSource(stream);
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
    regions.forEach(function (region) {
      region.events.split(" ").forEach(function (name) {
        // A region without types in its stream follows every event it names.
        if (name && (region.families.length === 0 || matches(name, region.families))) {
          source.addEventListener(name, region.refresh);
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
