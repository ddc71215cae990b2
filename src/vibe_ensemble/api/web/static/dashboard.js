// Vibe Ensemble dashboard: keeps the page live over the event feed, with no framework.
//
// The page marks its live region with data-fragment (a URL that returns it, rendered and escaped by
// the server), data-stream (the Server-Sent Events feed, starting after the last event rendered) and
// data-events (the event names to listen to). On each event the region is fetched again and swapped
// in whole. Nothing from an event is ever inserted into the page: events only say "look again".
"use strict";

(function () {
  function setStatus(state, text) {
    var status = document.getElementById("live-status");
    if (status) {
      status.dataset.state = state;
      status.textContent = text;
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
            setStatus("error", "update failed (" + response.status + ")");
            return;
          }
          var html = await response.text();
          var parsed = new DOMParser().parseFromString(html, "text/html");
          region.replaceChildren.apply(region, Array.from(parsed.body.childNodes));
          region.dataset.updated = String(Date.now());
          schedule();
        } while (again);
      } catch (err) {
        setStatus("error", "update failed");
      } finally {
        busy = false;
      }
    }

    schedule();
    var source = new EventSource(region.dataset.stream);
    source.onopen = function () {
      setStatus("live", "live");
    };
    source.onerror = function () {
      if (source.readyState === EventSource.CLOSED) {
        setStatus("off", "disconnected");
        refresh(); // a 401 here sends the browser to the login page
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
    (region.dataset.events || "").split(" ").forEach(function (name) {
      if (name) {
        source.addEventListener(name, refresh);
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live]").forEach(follow);
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
