// The reader's clock (issue 22): the time-zone field takes the browser's zone
// (Intl.DateTimeFormat().resolvedOptions().timeZone) where the page asks for it
// (data-browser-zone: the signup form, and the preferences page of a reader who never
// chose one).  It stays an ordinary field, shown and changeable, listing the zones the
// server knows; without JavaScript it keeps the site's zone (TIMEZONE).
(function () {
  "use strict";
  var field = document.getElementById("time_zone");
  if (!field || !field.hasAttribute("data-browser-zone")) return;
  var zone;
  try {
    zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  } catch (e) {
    return;
  }
  if (!zone) return;
  var list = document.getElementById(field.getAttribute("list") || "");
  if (list) {
    var known = false;
    for (var i = 0; i < list.options.length; i++) {
      if (list.options[i].value === zone) { known = true; break; }
    }
    if (!known) return; // a name the server would refuse: keep ours
  }
  field.value = zone;
})();
