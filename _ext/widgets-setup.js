// Set-up for the Jupyter widget manager (embed-amd.js) on the book's pages; loaded after
// require.js and before embed-amd.js (_config.yml: nb_ipywidgets_js).
(function () {
  // embed-amd.js finds its bundled fonts from its RequireJS module address, which by
  // default is relative to the page (chapters/@jupyter-widgets/...): point it at the copy
  // served with the book, beside this file.
  var here = document.currentScript.src;
  require.config({
    paths: {"@jupyter-widgets/html-manager/dist": new URL("html-manager", here).href}
  });
  // The widget controls typeset their labels with MathJax 2's MathJax.Hub.Queue; the book
  // uses MathJax 3, which has no Hub. Widgets render on the window's load event, after
  // MathJax has started (it is a deferred script), so the bridge is added before that.
  document.addEventListener("DOMContentLoaded", function () {
    var mj = window.MathJax;
    if (!mj || mj.Hub || typeof mj.typesetPromise !== "function") return;
    mj.Hub = {
      Queue: function (job) {
        var element = job && job[2];
        mj.startup.promise
          .then(function () { return mj.typesetPromise(element ? [element] : undefined); })
          .catch(function (err) { console.warn("MathJax: a widget label was not typeset", err); });
      }
    };
  });
})();
