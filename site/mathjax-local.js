// MathJax 2 settings for the site (loaded as config "local/deq"; it replaces the inline configuration mkdocs-jupyter
// writes into every page, which queued a second typesetting pass). The package ships the STIX-Web web fonts only.
// No fast preview pass: each page is typeset once. Equations keep their own \tag{N}; site/hooks.py gives each the
// anchor eq-N and a number that stays visible on a phone.
MathJax.Hub.Config({
  "HTML-CSS": { availableFonts: ["STIX-Web"], preferredFont: "STIX-Web", webFont: "STIX-Web", imageFont: null,
                EqnChunk: 100, EqnChunkFactor: 1.5, EqnChunkDelay: 10 },
  TeX: { equationNumbers: { autoNumber: "AMS", useLabelIds: true } },
  tex2jax: { inlineMath: [["$", "$"], ["\\(", "\\)"]], displayMath: [["$$", "$$"], ["\\[", "\\]"]], processEscapes: true,
             processEnvironments: true },
  displayAlign: "center",
  "fast-preview": { disabled: true },
  menuSettings: { CHTMLpreview: false },
  messageStyle: "none"
});
MathJax.Ajax.loadComplete("[MathJax]/config/local/deq.js");
