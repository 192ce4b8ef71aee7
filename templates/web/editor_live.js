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
