// Watch it go out: while an edition is moving, refresh the editions table (never the
// form the editor may be typing in) every two seconds.
(function () {
  var box = document.getElementById("editions");
  if (!box) return;
  setInterval(function () {
    if (!box.querySelector("[data-active]")) return;
    fetch("/editor/editions", {credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) { if (html !== null) box.innerHTML = html; });
  }, 2000);
})();
// The confirmation step: a button with data-confirm says what it will do (for a send,
// how many readers it reaches) and asks first.
document.addEventListener("click", function (ev) {
  var button = ev.target.closest ? ev.target.closest("[data-confirm]") : null;
  if (button && !window.confirm(button.getAttribute("data-confirm"))) ev.preventDefault();
});
