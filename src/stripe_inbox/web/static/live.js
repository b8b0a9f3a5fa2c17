// Refreshes the list of a dashboard page when the inbox changes: every few seconds it asks the same URL with
// the change marker it has; the server answers 204 when nothing changed, else the new list. Without this
// script the page still works: reload it.
(() => {
  "use strict";
  const EVERY_MS = 2000;
  const region = document.getElementById("live");
  if (!region) return;

  async function refresh() {
    if (document.hidden) return;
    const response = await fetch(location.href, {
      headers: { "X-Inbox-Live": region.dataset.marker || "" },
      credentials: "same-origin",
      cache: "no-store",
    });
    const marker = response.headers.get("X-Inbox-Marker");
    if (response.status === 200 && marker !== null) {
      region.innerHTML = await response.text();
      region.dataset.marker = marker;
    }
  }

  async function loop() {
    try {
      await refresh();
    } catch (error) {
      // The server is restarting or the network is down: the next round tries again.
    }
    setTimeout(loop, EVERY_MS);
  }
  setTimeout(loop, EVERY_MS);
})();
