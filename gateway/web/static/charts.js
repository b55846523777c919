/* Draws the page's charts with uPlot (vendored beside this file) from the JSON routes named by each
 * element's data-src. No inline script anywhere (the CSP forbids it); the page reads fine without
 * this file, the charts are the glance on top.
 *
 * data-chart="day":    15-minute energy, last 24 h: measured and estimated bars apart, missing slots
 *                      as a red strip at the bottom (a meter that stopped is an empty red stretch).
 * data-chart="period": daily energy of the billing period, the estimated part on top of each bar.
 * data-chart="line":   a line's transactions and errors per minute, last 6 h.
 *
 * A meter with an export channel (doc.channels.export) gets its exported energy drawn below the axis
 * in its own colour, as a last series, so the import series and their indices stay as they were.
 *
 * After drawing, each element carries data-drawn="1", data-points (slots with a value) and
 * data-estimated (slots or days with estimated energy), and with export data-export-points: the
 * page's tests read them.
 */
(function () {
  "use strict";

  var style = getComputedStyle(document.documentElement);
  function cssVar(name, fallback) { return style.getPropertyValue(name).trim() || fallback; }
  var C = {
    measured: cssVar("--measured", "#2f6fb3"), estimated: cssVar("--estimated", "#e07b00"),
    missing: cssVar("--missing", "#d64545"), exported: cssVar("--exported", "#2e8b57"), tx: cssVar("--tx", "#7c8da3"), err: cssVar("--bad", "#b00020"),
    grid: "#e3e8ee", axis: "#5b6675"
  };
  var ESTIMATED = { E: true, S: true, F: true };

  function zoned(tz) {
    return function (ts) { return uPlot.tzDate(new Date(ts * 1e3), tz); };
  }

  function hhmm(ts, tz) {
    return new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", hourCycle: "h23", timeZone: tz })
      .format(new Date(ts * 1e3));
  }

  function dayName(ts, tz) {
    return new Intl.DateTimeFormat(undefined, { weekday: "short", day: "numeric", month: "short", timeZone: tz })
      .format(new Date(ts * 1e3));
  }

  function bars(size) { return uPlot.paths.bars({ size: [size, Infinity, 1], align: 0 }); }

  // Axis labels in the site's zone and 24-hour time, whatever the browser's locale and zone.
  function labels(tz, days) {
    var f = new Intl.DateTimeFormat(undefined, days ? { day: "numeric", month: "short", timeZone: tz }
      : { hour: "2-digit", minute: "2-digit", hourCycle: "h23", timeZone: tz });
    return function (u, splits) { return splits.map(function (ts) { return f.format(new Date(ts * 1e3)); }); };
  }

  function axes(spark, tz, days) {
    if (spark) { return [{ show: false }, { show: false }]; }
    var font = "12px system-ui, sans-serif";
    return [
      { stroke: C.axis, grid: { stroke: C.grid }, ticks: { stroke: C.grid }, font: font, values: labels(tz, days) },
      { stroke: C.axis, grid: { stroke: C.grid }, ticks: { stroke: C.grid }, font: font, size: 46 }
    ];
  }

  function readout(el, text) {
    var out = el.nextElementSibling;
    if (out && out.classList.contains("readout")) { out.textContent = text; }
  }

  function dayChart(el, doc, spark) {
    var ch = doc.channels["import"], half = doc.interval_s / 2, tz = doc.tz;
    var x = [], measured = [], estimated = [], missing = [], first = -1, last = -1, top = 0, points = 0, est = 0;
    doc.t.forEach(function (t, i) {
      if (ch.wh[i] !== null) { if (first < 0) { first = i; } last = i; top = Math.max(top, ch.wh[i]); }
    });
    var current = Math.floor(doc.now / doc.interval_s) * doc.interval_s;  // the slot still open
    var strip = Math.max(top, 10) * 0.04;
    doc.t.forEach(function (t, i) {
      var wh = ch.wh[i], q = ch.quality[i];
      x.push(t + half);
      var isEst = wh !== null && ESTIMATED[q] === true;
      measured.push(wh !== null && !isEst ? wh : null);
      estimated.push(isEst ? wh : null);
      missing.push(wh === null && first >= 0 && i > first && t + doc.interval_s <= current ? strip : null);
      if (wh !== null) { points += 1; }
      if (isEst) { est += 1; }
    });
    var exp = exported(doc.channels.export, 1), bottom = exp ? -Math.max(exp.top, 10) * 1.08 : 0;
    var opts = {
      width: el.clientWidth, height: spark ? 72 : 190, tzDate: zoned(tz), legend: { show: false },
      cursor: spark ? { show: false } : { points: { show: false } },
      scales: { x: { time: true, range: [doc.from, doc.to] }, y: { range: [bottom, Math.max(top, 10) * 1.08] } },
      axes: axes(spark, tz, false),
      series: [
        {},
        { label: "measured", fill: C.measured, stroke: C.measured, width: 0, paths: bars(0.85), points: { show: false } },
        { label: "estimated", fill: C.estimated, stroke: C.estimated, width: 0, paths: bars(0.85), points: { show: false } },
        { label: "no data", fill: C.missing, stroke: C.missing, width: 0, paths: bars(1), points: { show: false } }
      ],
      hooks: { setCursor: [function (u) {
        var i = u.cursor.idx;
        if (i === null || i === undefined) { readout(el, ""); return; }
        var t = doc.t[i], wh = ch.wh[i], q = ch.quality[i];
        readout(el, hhmm(t, tz) + "–" + hhmm(t + doc.interval_s, tz) + ": " +
          (wh === null ? "no data" : wh + " Wh" + (ESTIMATED[q] ? " (estimated, " + q + ")" : "")) +
          (exp && exp.wh[i] !== null ? "; exported " + exp.wh[i] + " Wh" : ""));
      }] }
    };
    var data = [x, measured, estimated, missing];
    if (exp) { opts.series.push(exportSeries(0.85)); data.push(exp.values); }
    return { plot: new uPlot(opts, data, el), points: points, estimated: est, exportPoints: exp ? exp.points : null };
  }

  function periodChart(el, doc) {
    var ch = doc.channels["import"], tz = doc.tz, x = [], total = [], measured = [], top = 0, points = 0, est = 0;
    doc.t.forEach(function (t, i) {  // drawn in kWh: a day of a house is thousands of Wh
      var wh = ch.wh[i], e = ch.estimated_wh[i];
      x.push(t + 43200);
      total.push(wh === null ? null : wh / 1000);
      measured.push(wh === null ? null : (wh - (e || 0)) / 1000);
      if (wh !== null) { points += 1; top = Math.max(top, wh / 1000); }
      if (e) { est += 1; }
    });
    var exp = exported(doc.channels.export, 1000), bottom = exp ? -Math.max(exp.top, 1) * 1.08 : 0;
    var opts = {
      width: el.clientWidth, height: 190, tzDate: zoned(tz), legend: { show: false }, cursor: { points: { show: false } },
      scales: { x: { time: true, range: [doc.t[0], doc.t[doc.t.length - 1] + 86400] },
        y: { range: [bottom, Math.max(top, 1) * 1.08] } },
      axes: axes(false, tz, true),
      series: [
        {},
        // The whole day in the estimated colour, the measured part drawn over it: what shows on top is estimated.
        { label: "total", fill: C.estimated, stroke: C.estimated, width: 0, paths: bars(0.8), points: { show: false } },
        { label: "measured", fill: C.measured, stroke: C.measured, width: 0, paths: bars(0.8), points: { show: false } }
      ],
      hooks: { setCursor: [function (u) {
        var i = u.cursor.idx;
        if (i === null || i === undefined) { readout(el, ""); return; }
        var wh = ch.wh[i], e = ch.estimated_wh[i];
        readout(el, dayName(doc.t[i], tz) + ": " + (wh === null ? "no data" : (wh / 1000).toFixed(3) + " kWh" +
          (e ? ", " + (e / 1000).toFixed(3) + " kWh estimated" : "") + " (" + ch.intervals[i] + " of " +
          doc.expected[i] + " intervals)") +
          (exp && exp.wh[i] !== null ? "; exported " + (exp.wh[i] / 1000).toFixed(3) + " kWh" : ""));
      }] }
    };
    var data = [x, total, measured];
    if (exp) { opts.series.push(exportSeries(0.8)); data.push(exp.values); }
    return { plot: new uPlot(opts, data, el), points: points, estimated: est, exportPoints: exp ? exp.points : null };
  }

  // The export channel as values below the axis (scaled by 1/div: Wh or kWh), or null without one.
  function exported(ch, div) {
    if (!ch) { return null; }
    var top = 0, points = 0;
    var values = ch.wh.map(function (wh) {
      if (wh === null) { return null; }
      points += 1; top = Math.max(top, wh / div);
      return -wh / div;
    });
    return { wh: ch.wh, values: values, top: top, points: points };
  }

  function exportSeries(size) {
    return { label: "exported", fill: C.exported, stroke: C.exported, width: 0, paths: bars(size), points: { show: false },
      fillTo: 0 };
  }

  function lineChart(el, doc) {
    var tz = doc.tz, x = doc.t.map(function (t) { return t + doc.bucket_s / 2; }), top = 0, points = 0, est = 0;
    doc.transactions.forEach(function (n) { top = Math.max(top, n); if (n) { points += 1; } });
    doc.errors.forEach(function (n) { if (n) { est += 1; } });
    var opts = {
      width: el.clientWidth, height: 150, tzDate: zoned(tz), legend: { show: false }, cursor: { points: { show: false } },
      scales: { x: { time: true, range: [doc.t[0], doc.t[doc.t.length - 1] + doc.bucket_s] },
        y: { range: [0, Math.max(top, 5) * 1.1] } },
      axes: axes(false, tz, false),
      series: [
        {},
        { label: "transactions", fill: C.tx, stroke: C.tx, width: 0, paths: bars(1), points: { show: false } },
        { label: "errors", fill: C.err, stroke: C.err, width: 0, paths: bars(1), points: { show: false } }
      ],
      hooks: { setCursor: [function (u) {
        var i = u.cursor.idx;
        if (i === null || i === undefined) { readout(el, ""); return; }
        readout(el, hhmm(doc.t[i], tz) + ": " + doc.transactions[i] + " transactions, " + doc.errors[i] + " errors");
      }] }
    };
    return { plot: new uPlot(opts, [x, doc.transactions, doc.errors], el), points: points, estimated: est };
  }

  function draw(el, doc) {
    var kind = el.getAttribute("data-chart"), made;
    el.textContent = "";
    if (kind === "day") { made = dayChart(el, doc, el.getAttribute("data-spark") === "1"); }
    else if (kind === "period") { made = periodChart(el, doc); }
    else { made = lineChart(el, doc); }
    el.uplot = made.plot;
    el.setAttribute("data-points", String(made.points));
    el.setAttribute("data-estimated", String(made.estimated));
    if (made.exportPoints !== null && made.exportPoints !== undefined) {
      el.setAttribute("data-export-points", String(made.exportPoints));
      var legend = el.previousElementSibling;
      if (legend && legend.classList.contains("legend") && !legend.querySelector(".sw-exported")) {
        var item = document.createElement("span"), swatch = document.createElement("i");
        swatch.className = "swatch sw-exported";
        item.appendChild(swatch);
        item.appendChild(document.createTextNode("exported (below the axis)"));
        legend.appendChild(item);
      }
    }
    el.setAttribute("data-drawn", "1");
    if (window.ResizeObserver) {
      new ResizeObserver(function () {
        if (el.clientWidth && el.clientWidth !== made.plot.width) {
          made.plot.setSize({ width: el.clientWidth, height: made.plot.height });
        }
      }).observe(el);
    }
  }

  function failed(el, why) {
    el.textContent = "";
    var note = document.createElement("p");
    note.className = "status";
    note.textContent = "Chart not available (" + why + ").";
    el.appendChild(note);
    el.setAttribute("data-drawn", "error");
  }

  function load(el) {
    fetch(el.getAttribute("data-src"), { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
      .then(function (doc) { draw(el, doc); })
      .catch(function (e) { failed(el, e.message || String(e)); });
  }

  if (typeof uPlot === "undefined") { return; }
  Array.prototype.forEach.call(document.querySelectorAll("[data-chart]"), load);
})();
