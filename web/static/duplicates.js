// The Duplicates page: show the threshold while the slider moves. The form works without this script.
"use strict";
(function () {
  const range = document.getElementById("dups-threshold");
  const out = document.getElementById("dups-threshold-value");
  if (!range || !out) return;
  range.addEventListener("input", () => { out.value = Number(range.value).toFixed(2); });
})();
