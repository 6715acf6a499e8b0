// The SQL editor's few behaviours: Ctrl/Cmd+Enter runs the query, Tab indents, and after an
// error the text cursor is put where PostgreSQL says the error is.
(function () {
  "use strict";
  var query = document.getElementById("query");
  var form = document.getElementById("sql-form");
  if (!query || !form) return;
  query.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    } else if (event.key === "Tab" && !event.shiftKey) {
      event.preventDefault();
      query.setRangeText("  ", query.selectionStart, query.selectionEnd, "end");
    }
  });
  var position = parseInt(query.dataset.errorPosition || "", 10);
  if (position > 0) {
    // PostgreSQL counts characters from 1; the textarea counts UTF-16 units from 0.
    var chars = Array.from(query.value);
    var start = chars.slice(0, position - 1).join("").length;
    var end = start + (chars[position - 1] || "").length;
    query.focus();
    query.setSelectionRange(start, end);
  } else {
    query.focus();
  }
})();
