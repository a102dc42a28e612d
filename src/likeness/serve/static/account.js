// The account bar: sign out (a POST with the session's CSRF token), then the sign-in page.
(() => {
  "use strict";
  const nav = document.querySelector("nav.account[data-csrf]");
  if (!nav) return;
  nav.querySelectorAll("[data-action=sign-out]").forEach((button) => {
    button.addEventListener("click", async () => {
      await fetch("/logout", {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": nav.dataset.csrf },
      });
      window.location.href = "/login";
    });
  });
})();
