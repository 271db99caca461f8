// /dashboard#key=... signs in without the key ever reaching a URL the server sees or logs.
"use strict";
(function () {
  const match = /(?:^#|&)key=([^&]*)/.exec(window.location.hash);
  if (!match) return;
  history.replaceState(null, "", window.location.pathname);
  const form = document.querySelector("form.login");
  form.elements.key.value = decodeURIComponent(match[1]);
  form.submit();
})();
