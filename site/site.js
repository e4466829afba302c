// Behaviour of the tutorial site on top of MkDocs Material (no framework, no network).
(function () {
  "use strict";

  // A table wider than its box: show its cue ("scroll sideways") and a shadow at the cut edge.
  function tableCues() {
    document.querySelectorAll(".deq-table").forEach(function (t) {
      var box = t.querySelector(".deq-table-scroll"), cue = t.querySelector(".deq-scroll-cue");
      if (!box) return;
      var over = box.scrollWidth > box.clientWidth + 1;
      box.classList.toggle("deq-overflows", over);
      if (cue) cue.hidden = !over;
    });
  }

  // A figure shown smaller than its natural size can be opened at full size (tap or click, Esc to close).
  var FIGURES = ".jp-RenderedImage img, .jp-RenderedSVG svg, .jp-RenderedPNG img";
  function naturalWidth(el) {
    if (el.tagName.toLowerCase() === "img") return el.naturalWidth || 0;
    try { return el.width.baseVal.value || 0; } catch (e) { return 0; }
  }
  function zoomables() {
    document.querySelectorAll(FIGURES).forEach(function (el) {
      if (el.closest(".deq-lightbox")) return;
      var shown = el.getBoundingClientRect().width;
      el.classList.toggle("deq-zoomable", shown > 0 && naturalWidth(el) > shown + 2);
    });
  }
  function closeLightbox() {
    var box = document.querySelector(".deq-lightbox");
    if (box) box.remove();
  }
  function openLightbox(el) {
    closeLightbox();
    var box = document.createElement("div");
    box.className = "deq-lightbox";
    box.setAttribute("role", "dialog");
    box.setAttribute("aria-label", "Figure at full size");
    var fig = document.createElement("div");
    fig.className = "deq-lightbox__figure";
    var copy = el.cloneNode(true);
    copy.classList.remove("deq-zoomable");
    copy.removeAttribute("id");
    copy.querySelectorAll("[id]").forEach(function (n) { n.removeAttribute("id"); });
    var w = naturalWidth(el);
    if (w) { copy.style.width = w + "px"; copy.style.height = "auto"; }
    fig.appendChild(copy);
    var close = document.createElement("button");
    close.className = "deq-lightbox__close";
    close.type = "button";
    close.textContent = "Close ✕";
    box.appendChild(close);
    box.appendChild(fig);
    box.addEventListener("click", function (e) { if (e.target === box || e.target === close) closeLightbox(); });
    document.body.appendChild(box);
    close.focus();
  }
  document.addEventListener("click", function (e) {
    var el = e.target.closest && e.target.closest(".deq-zoomable");
    if (el && !el.closest(".deq-lightbox")) { e.preventDefault(); openLightbox(el); }
  });
  document.addEventListener("keydown", function (e) { if (e.key === "Escape") closeLightbox(); });

  // A link to an equation or a heading inside a closed fold opens the fold.
  function reveal() {
    var id = decodeURIComponent(location.hash.slice(1));
    var t = id && document.getElementById(id);
    for (var d = t && t.closest("details"); d; d = d.parentElement && d.parentElement.closest("details")) d.open = true;
  }

  // A display equation wider than its box (a phone) scrolls inside it: a shadow at the cut edge says so.
  function equationCues() {
    document.querySelectorAll(".MathJax_Display").forEach(function (e) {
      e.classList.toggle("deq-overflows", e.scrollWidth > e.clientWidth + 1);
    });
  }

  function refresh() { tableCues(); zoomables(); equationCues(); }
  var timer = null;
  window.addEventListener("resize", function () { clearTimeout(timer); timer = setTimeout(refresh, 100); });
  window.addEventListener("hashchange", reveal);
  window.addEventListener("load", function () {
    refresh(); reveal();
    if (window.MathJax && MathJax.Hub && MathJax.Hub.Queue) MathJax.Hub.Queue(refresh);
  });
  document.addEventListener("toggle", function () { refresh(); }, true);
  if (document.readyState !== "loading") refresh();
  else document.addEventListener("DOMContentLoaded", refresh);

  // Folds are built into the pages (site/hooks.py). For paper: open every fold before printing, restore afterwards.
  var opened = [];
  window.addEventListener("beforeprint", function () {
    opened = Array.from(document.querySelectorAll("details:not([open])"));
    opened.forEach(function (d) { d.open = true; });
  });
  window.addEventListener("afterprint", function () {
    opened.forEach(function (d) { d.open = false; });
    opened = [];
  });
})();
