// The page's service worker: shows the server's web pushes (docs/API.md, "Push payload") and opens
// the room when one is clicked. The payload is encrypted end to end; the browser decrypts it.
self.addEventListener('push', (event) => {
  let data = {};
  try {
    data = event.data ? event.data.json() : {};
  } catch {
    data = {};
  }
  const count = typeof data.count === 'number' && data.count > 1 ? ` (${data.count})` : '';
  event.waitUntil(
    self.registration.showNotification(`${data.title || 'Chat'}${count}`, {
      body: data.body || '',
      tag: data.roomId || undefined,
      data: { url: data.url || '/' },
    }),
  );
});

self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  const url = (event.notification.data && event.notification.data.url) || '/';
  event.waitUntil(
    self.clients.matchAll({ type: 'window', includeUncontrolled: true }).then((windows) => {
      for (const w of windows) {
        if ('focus' in w) {
          if ('navigate' in w) w.navigate(url);
          return w.focus();
        }
      }
      return self.clients.openWindow(url);
    }),
  );
});
