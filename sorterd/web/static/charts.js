// Hand-written SVG bar charts for the console: no library, no network (the floor has no
// internet). barChart(el, labels, series, colours) draws stacked bars, one per label.
"use strict";

(function () {
  const NS = "http://www.w3.org/2000/svg";

  function el(name, attrs, text) {
    const node = document.createElementNS(NS, name);
    for (const key in attrs) node.setAttribute(key, attrs[key]);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function niceMax(value) {
    if (!(value > 0)) return 1;
    const power = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 2.5, 5, 10]) {
      if (step * power >= value) return step * power;
    }
    return 10 * power;
  }

  function clock(epochS) {
    const d = new Date(epochS * 1000);
    return d.toISOString().slice(11, 16);
  }

  // labels: epoch seconds of each bar; series: [{name, values: [number|null], colour}].
  function barChart(container, labels, series, options) {
    const width = container.clientWidth || 800;
    const height = container.clientHeight || 220;
    const pad = { left: 56, right: 8, top: 10, bottom: 22 };
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const totals = labels.map((_, i) =>
      series.reduce((sum, s) => sum + (s.values[i] || 0), 0));
    const top = niceMax(Math.max(0, ...totals));
    const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, role: "img",
      "aria-label": options.title });
    for (let k = 0; k <= 4; k++) {
      const y = pad.top + plotH - (plotH * k) / 4;
      svg.appendChild(el("line", { x1: pad.left, x2: width - pad.right, y1: y, y2: y,
        stroke: "#2c3947" }));
      const value = (top * k) / 4;
      svg.appendChild(el("text", { x: pad.left - 6, y: y + 4, "text-anchor": "end" },
        value >= 1000 ? `${Math.round(value / 100) / 10}k` : `${Math.round(value)}`));
    }
    const slot = plotW / Math.max(labels.length, 1);
    labels.forEach((label, i) => {
      let base = pad.top + plotH;
      for (const s of series) {
        const value = s.values[i];
        if (!(value > 0)) continue;
        const h = (plotH * value) / top;
        base -= h;
        const bar = el("rect", { x: pad.left + i * slot + 1, y: base,
          width: Math.max(slot - 2, 1), height: h, fill: s.colour });
        bar.appendChild(el("title", {}, `${clock(label)} ${s.name}: ${Math.round(value)}`));
        svg.appendChild(bar);
      }
      if (i % 10 === 0) {
        svg.appendChild(el("text", { x: pad.left + i * slot, y: height - 6 }, clock(label)));
      }
    });
    container.replaceChildren(svg);
  }

  window.sorterdCharts = { barChart };
})();
