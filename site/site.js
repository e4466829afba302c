// Fold the code of cells marked `#| code-fold: true` (exercise solutions): scripts/build_site.py tags them
// "code-fold" and nbconvert turns tags into the class "celltag_code-fold".
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll(".celltag_code-fold .jp-Cell-inputWrapper").forEach(function (inp) {
    if (inp.closest("details")) return;
    var d = document.createElement("details");
    d.className = "deq-fold";
    var s = document.createElement("summary");
    s.textContent = "Show the solution code";
    inp.parentNode.insertBefore(d, inp);
    d.appendChild(s);
    d.appendChild(inp);
  });
});
