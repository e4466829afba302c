// MathJax 2 settings for the site (loaded as config "local/deq"): the package ships the STIX-Web web fonts only.
// No fast preview pass: each page is typeset once (the preview doubled the work per page).
MathJax.Hub.Config({
  "HTML-CSS": { availableFonts: ["STIX-Web"], preferredFont: "STIX-Web", webFont: "STIX-Web", imageFont: null },
  tex2jax: { inlineMath: [["$", "$"], ["\\(", "\\)"]], displayMath: [["$$", "$$"], ["\\[", "\\]"]], processEscapes: true },
  "fast-preview": { disabled: true },
  menuSettings: { CHTMLpreview: false },
  messageStyle: "none"
});
MathJax.Ajax.loadComplete("[MathJax]/config/local/deq.js");
