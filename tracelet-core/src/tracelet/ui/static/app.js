// Tracelet's dashboard: a read-only view of the local store, served by `tracelet ui`.
// Routes (in the URL's hash): #/runs, #/charts?runs=ID,ID&metrics=M,M, #/compare?runs=ID,ID,
// #/run/ID. Every request goes to the JSON API described in docs/ui.md.
"use strict";

const POLL_MS = 1000; // live charts: new points once a second
const REFRESH_MS = 5000; // runs table and a running run's page
const MAX_SHAPES = 100; // NaN/inf lines drawn per chart
const PALETTE = [
  "#2f6fde", "#e4572e", "#29a35a", "#9b51e0", "#f2a900",
  "#17becf", "#d6336c", "#7f7f7f", "#8c564b", "#1f3b73",
];

const state = {
  runs: [],
  projects: [],
  selected: new Set(),
  sort: { key: "created_at", desc: true },
  filters: { project: "", status: "", tag: "", param: "", text: "" },
  chart: { runs: [], metrics: [], smooth: 0, log: false, overlay: false },
  panels: [],
  timers: [],
};

// -- small helpers ---------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) throw new ApiError(response.status, (data && data.error) || response.statusText);
  return { data, bytes: text.length };
}

async function get(path) {
  return (await api(path)).data;
}

function showError(error) {
  const box = document.getElementById("error");
  box.textContent = String(error.message || error);
  box.hidden = false;
  clearTimeout(showError.timer);
  showError.timer = setTimeout(() => (box.hidden = true), 6000);
}

function every(ms, work) {
  let busy = false;
  const id = setInterval(async () => {
    if (busy || document.hidden) return;
    busy = true;
    try {
      await work();
    } catch (error) {
      showError(error);
    } finally {
      busy = false;
    }
  }, ms);
  state.timers.push(id);
}

function stopTimers() {
  state.timers.forEach(clearInterval);
  state.timers = [];
  state.panels = [];
  setLive(false);
}

function setLive(on) {
  document.getElementById("live").hidden = !on;
}

function runUrl(id) {
  return `/api/runs/${encodeURIComponent(id)}`;
}

function fmtNumber(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "string") return value;
  if (Number.isInteger(value) && Math.abs(value) < 1e15) return value.toLocaleString("en");
  const magnitude = Math.abs(value);
  if (magnitude !== 0 && (magnitude >= 1e6 || magnitude < 1e-3)) {
    return Number(value.toPrecision(5)).toExponential();
  }
  return String(Number(value.toPrecision(6)));
}

function fmtTime(seconds) {
  if (!seconds) return "–";
  const date = new Date(seconds * 1000);
  return date.toISOString().slice(0, 19).replace("T", " ");
}

function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

function fmtBytes(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 ** 2) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 ** 2).toFixed(1)} MiB`;
}

function statusBadge(status) {
  return h("span", { class: `status ${status}` }, status);
}

function tagList(tags) {
  return Object.entries(tags || {}).map(([key, value]) =>
    h("span", { class: "tag" }, value ? `${key}=${value}` : key));
}

function table(headers, rows, options = {}) {
  const head = h("tr", {}, headers.map((name) =>
    h("th", { class: options.numeric && options.numeric.includes(name) ? "num" : null }, name)));
  const body = rows.map((cells) => h("tr", {}, cells.map((cell, index) =>
    h("td", { class: options.numeric && options.numeric.includes(headers[index]) ? "num" : null },
      cell))));
  return rows.length ? h("table", {}, h("thead", {}, head), h("tbody", {}, body))
    : h("p", { class: "empty" }, options.empty || "none");
}

function card(title, ...content) {
  return h("section", { class: "card" }, h("h2", {}, title), ...content);
}

function hashParams() {
  const [path, query] = location.hash.slice(1).split("?");
  return { path: path || "/runs", params: new URLSearchParams(query || "") };
}

function setHash(path, params) {
  const query = params.toString();
  history.replaceState(null, "", `#${path}${query ? `?${query}` : ""}`);
}

function listParam(params, name) {
  return (params.get(name) || "").split(",").filter(Boolean);
}

// -- routing ---------------------------------------------------------------------------

const VIEWS = {
  runs: showRuns,
  charts: showCharts,
  compare: showCompare,
  run: showRun,
};

// One view at a time: a hash change while a view is still loading waits for it, and only
// the latest one queued is shown. (Two views loading at once raced: the slower one, often
// the earlier, replaced the later one's page, whose chart then never became ready.)
let routing = Promise.resolve();
let routesAsked = 0;

function route() {
  const ticket = ++routesAsked;
  routing = routing
    .then(() => (ticket === routesAsked ? showView() : undefined))
    .catch((error) => showError(error));
  return routing;
}

async function showView() {
  stopTimers();
  const { path, params } = hashParams();
  const [, name, id] = path.split("/");
  const view = VIEWS[name] ? name : "runs";
  for (const link of document.querySelectorAll("header nav a")) {
    link.classList.toggle("active", link.dataset.view === view);
  }
  const main = document.getElementById("view");
  main.replaceChildren(h("p", { class: "muted" }, "loading…"));
  main.dataset.view = view;
  try {
    await VIEWS[view](main, params, id && decodeURIComponent(id));
  } catch (error) {
    main.replaceChildren(h("p", { class: "empty" }, String(error.message || error)));
    showError(error);
  }
}

// -- runs ------------------------------------------------------------------------------

const RUN_COLUMNS = [
  ["name", "name"], ["id", "id"], ["project", "project"], ["status", "status"],
  ["started", "created_at"], ["duration", "duration_s"], ["tags", null],
];

async function loadRuns() {
  const { project, status, tag, param } = state.filters;
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries({ project, status, tag, param })) {
    if (value) query.set(key, value);
  }
  const found = await get(`/api/runs?${query}`);
  state.runs = found.runs;
  state.projects = found.projects;
  return found;
}

async function showRuns(main, params) {
  for (const key of Object.keys(state.filters)) state.filters[key] = params.get(key) || "";
  await loadRuns();
  const body = h("tbody", { id: "runs-body" });
  const actions = h("span", { class: "toolbar" });
  const render = () => renderRunRows(body, actions);
  const filters = runFilters(async () => {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(state.filters)) if (value) query.set(key, value);
    setHash("/runs", query);
    await loadRuns();
    render();
  });
  const head = h("tr", {},
    h("th", {}, h("input", {
      type: "checkbox", title: "select every run shown", id: "select-all",
      onchange: (event) => {
        for (const run of visibleRuns()) {
          if (event.target.checked) state.selected.add(run.id);
          else state.selected.delete(run.id);
        }
        render();
      },
    })),
    RUN_COLUMNS.map(([label, key]) => h("th", {
      class: key ? "sortable" : null,
      dataset: key ? { sort: key } : {},
      onclick: key ? () => {
        state.sort = { key, desc: state.sort.key === key ? !state.sort.desc : false };
        render();
      } : null,
    }, label)));
  main.replaceChildren(
    h("h1", {}, "Runs"),
    filters,
    actions,
    h("div", { class: "card" }, h("table", { id: "runs" }, h("thead", {}, head), body)),
  );
  render();
  every(REFRESH_MS, async () => {
    await loadRuns();
    render();
  });
}

function runFilters(apply) {
  let timer = null;
  const later = () => {
    clearTimeout(timer);
    timer = setTimeout(apply, 250);
  };
  const field = (name, placeholder) => h("input", {
    type: "search", name, placeholder, value: state.filters[name],
    oninput: (event) => {
      state.filters[name] = event.target.value.trim();
      if (name === "text") apply(); else later();
    },
  });
  const choice = (name, options) => h("select", {
    name,
    onchange: (event) => {
      state.filters[name] = event.target.value;
      apply();
    },
  }, options.map(([value, label]) =>
    h("option", { value, selected: state.filters[name] === value }, label)));
  const statuses = ["running", "finished", "failed", "killed", "crashed"];
  return h("div", { class: "toolbar", id: "filters" },
    h("label", {}, "project", choice("project",
      [["", "all"], ...state.projects.map((p) => [p, p])])),
    h("label", {}, "status", choice("status", [["", "any"], ...statuses.map((s) => [s, s])])),
    h("label", {}, "tag", field("tag", "name or name=value")),
    h("label", {}, "param", field("param", "name=value")),
    h("label", {}, "name", field("text", "contains")));
}

function visibleRuns() {
  const text = state.filters.text.toLowerCase();
  const rows = state.runs.filter((run) => !text || run.name.toLowerCase().includes(text)
    || run.id.startsWith(text));
  const { key, desc } = state.sort;
  rows.sort((a, b) => {
    const x = a[key] ?? -Infinity;
    const y = b[key] ?? -Infinity;
    const order = typeof x === "string" ? x.localeCompare(y) : x - y;
    return desc ? -order : order;
  });
  return rows;
}

function renderRunRows(body, actions) {
  const rows = visibleRuns();
  body.replaceChildren(...rows.map((run) => h("tr", {
    class: state.selected.has(run.id) ? "selected" : null, dataset: { run: run.id },
  },
  h("td", {}, h("input", {
    type: "checkbox", checked: state.selected.has(run.id), "aria-label": `select ${run.name}`,
    onchange: (event) => {
      if (event.target.checked) state.selected.add(run.id); else state.selected.delete(run.id);
      renderRunRows(body, actions);
    },
  })),
  h("td", {}, h("a", { href: `#/run/${run.id}` }, run.name)),
  h("td", { class: "mono" }, run.id.slice(0, 12)),
  h("td", {}, run.project),
  h("td", {}, statusBadge(run.status)),
  h("td", {}, fmtTime(run.created_at)),
  h("td", {}, run.status === "running" ? "running" : fmtDuration(run.duration_s)),
  h("td", {}, tagList(run.tags)))));
  if (!rows.length) body.append(h("tr", {}, h("td", { colspan: 8, class: "empty" }, "no runs match")));
  for (const th of document.querySelectorAll("#runs th[data-sort]")) {
    const mark = th.dataset.sort === state.sort.key ? (state.sort.desc ? " ▾" : " ▴") : "";
    th.textContent = RUN_COLUMNS.find(([, key]) => key === th.dataset.sort)[0] + mark;
  }
  const chosen = [...state.selected];
  actions.replaceChildren(
    h("span", { class: "muted", id: "run-count" }, `${rows.length} of ${state.runs.length} runs`),
    h("button", {
      id: "chart-selected", disabled: !chosen.length,
      onclick: () => (location.hash = `#/charts?runs=${chosen.join(",")}`),
    }, `Charts (${chosen.length})`),
    h("button", {
      id: "compare-selected", disabled: chosen.length < 2, class: "plain",
      onclick: () => (location.hash = `#/compare?runs=${chosen.join(",")}`),
    }, `Compare (${chosen.length})`),
    ...(chosen.length ? [h("button", {
      class: "plain",
      onclick: () => {
        state.selected.clear();
        renderRunRows(body, actions);
      },
    }, "Clear selection")] : []));
}

// -- charts ----------------------------------------------------------------------------

let plotlyLoading = null;

function loadPlotly() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  plotlyLoading ||= new Promise((resolve, reject) => {
    const script = h("script", { src: "/static/plotly.min.js" });
    script.onload = () => resolve(window.Plotly);
    script.onerror = () => reject(new Error("could not load plotly.js"));
    document.head.append(script);
  });
  return plotlyLoading;
}

async function showCharts(main, params) {
  const chart = state.chart;
  chart.runs = listParam(params, "runs");
  if (!chart.runs.length) chart.runs = [...state.selected];
  if (!chart.runs.length) {
    const latest = (await loadRuns()).runs.at(-1);
    if (!latest) throw new Error("the store has no runs yet");
    chart.runs = [latest.id];
  }
  chart.smooth = Number(params.get("smooth") || 0);
  chart.log = params.get("log") === "1";
  chart.overlay = params.get("overlay") === "1";
  const runs = await Promise.all(chart.runs.map((id) => get(runUrl(id))));
  const metrics = runs.map((run) => new Set(run.metric_names));
  const names = [...new Set(runs.flatMap((run) => run.metric_names))].sort();
  chart.metrics = listParam(params, "metrics").filter((name) => names.includes(name));
  if (!chart.metrics.length) chart.metrics = defaultMetrics(names);
  const plotly = loadPlotly();
  const panels = h("div", { id: "charts" });
  main.replaceChildren(
    h("h1", {}, "Charts: ", runs.map((run, i) => [i ? ", " : "",
      h("a", { href: `#/run/${run.id}` }, run.name)])),
    chartControls(panels, runs, metrics),
    h("div", { class: "charts-layout" }, metricPicker(names, panels, runs, metrics), panels));
  await plotly;
  await buildPanels(panels, runs, metrics);
  every(POLL_MS, () => Promise.all(state.panels.map((panel) => panel.poll())));
}

function defaultMetrics(names) {
  const visible = names.filter((name) => !name.startsWith("system/"));
  const losses = visible.filter((name) => /loss/i.test(name));
  return (losses.length ? losses : visible.length ? visible : names).slice(0, 2);
}

function saveChartHash() {
  const chart = state.chart;
  const query = new URLSearchParams({ runs: chart.runs.join(","), metrics: chart.metrics.join(",") });
  if (chart.smooth) query.set("smooth", chart.smooth);
  if (chart.log) query.set("log", "1");
  if (chart.overlay) query.set("overlay", "1");
  setHash("/charts", query);
}

function chartControls(panels, runs, metrics) {
  const chart = state.chart;
  const redraw = () => {
    saveChartHash();
    state.panels.forEach((panel) => panel.render());
  };
  const value = h("span", { class: "mono", id: "smooth-value" }, chart.smooth.toFixed(2));
  return h("div", { class: "toolbar" },
    h("label", {}, "smoothing", h("input", {
      type: "range", min: 0, max: 0.99, step: 0.01, value: chart.smooth, id: "smooth",
      oninput: (event) => {
        chart.smooth = Number(event.target.value);
        value.textContent = chart.smooth.toFixed(2);
        redraw();
      },
    }), value),
    h("label", {}, h("input", {
      type: "checkbox", id: "log", checked: chart.log,
      onchange: (event) => {
        chart.log = event.target.checked;
        redraw();
      },
    }), "log scale"),
    h("label", {}, h("input", {
      type: "checkbox", id: "overlay", checked: chart.overlay,
      onchange: async (event) => {
        chart.overlay = event.target.checked;
        saveChartHash();
        await buildPanels(panels, runs, metrics);
      },
    }), "all metrics on one chart"),
    h("span", { class: "muted" }, "drag to zoom (the detail is fetched), double-click to reset"));
}

function metricPicker(names, panels, runs, metrics) {
  const chart = state.chart;
  const list = h("div", { class: "metric-list", id: "metric-list" });
  const fill = (text) => list.replaceChildren(...names
    .filter((name) => !text || name.toLowerCase().includes(text.toLowerCase()))
    .map((name) => h("label", { title: name }, h("input", {
      type: "checkbox", value: name, checked: chart.metrics.includes(name),
      onchange: async (event) => {
        chart.metrics = event.target.checked ? [...chart.metrics, name]
          : chart.metrics.filter((m) => m !== name);
        saveChartHash();
        await buildPanels(panels, runs, metrics);
      },
    }), name)));
  fill("");
  return h("div", { class: "card" },
    h("h2", {}, `Metrics (${names.length})`),
    h("input", { type: "search", placeholder: "filter", oninput: (e) => fill(e.target.value) }),
    list);
}

async function buildPanels(panels, runs, metrics) {
  const chart = state.chart;
  const groups = chart.overlay ? [chart.metrics] : chart.metrics.map((name) => [name]);
  let color = 0;
  state.panels = groups.filter((group) => group.length).map((group) => {
    const specs = [];
    group.forEach((metric) => runs.forEach((run, r) => {
      if (!metrics[r].has(metric)) return;
      const several = runs.length > 1;
      const name = chart.overlay || !several ? (several ? `${run.name}: ${metric}` : metric) : run.name;
      specs.push({ run, metric, name, color: PALETTE[(chart.overlay ? color++ : r) % PALETTE.length] });
    }));
    return new ChartPanel(group.join(", "), specs);
  });
  panels.replaceChildren(...state.panels.map((panel) => panel.el));
  if (!state.panels.length) panels.append(h("p", { class: "empty" }, "pick a metric"));
  await Promise.all(state.panels.map((panel) => panel.load()));
}

// One chart: several series (a metric of a run each), fetched downsampled by the server.
class ChartPanel {
  constructor(title, specs) {
    this.title = title;
    this.series = specs.map((spec) => ({ ...spec, entries: [], odd: [], anomalies: [], total: 0 }));
    this.zoom = null;
    this.plot = h("div", { class: "plot" });
    this.foot = h("div", { class: "foot" });
    this.el = h("div", { class: "chart", dataset: { metric: title, state: "loading" } },
      h("h2", {}, title), this.plot, this.foot);
  }

  points() {
    return Math.max(200, Math.min(4000, Math.round(this.plot.clientWidth || 1200)));
  }

  seriesUrl(series, query) {
    return `${runUrl(series.run.id)}/metrics/${encodeURIComponent(series.metric)}?${query}`;
  }

  // The whole history (range null) or the detail of [start, end]; then draw.
  async load(range = null) {
    const began = performance.now();
    const query = new URLSearchParams({ points: this.points() });
    if (range) {
      query.set("start", Math.floor(range[0]));
      query.set("end", Math.ceil(range[1]));
    }
    this.el.dataset.state = "loading";
    const answers = await Promise.all(this.series.map((s) => api(this.seriesUrl(s, query))));
    let bytes = 0;
    answers.forEach(({ data, bytes: size }, i) => {
      const series = this.series[i];
      bytes += size;
      series.entries = entriesOf(data);
      series.odd = data.nonfinite;
      series.total = data.total;
      series.running = data.running;
      if (!range) series.lastStep = lastStepOf(series.entries, series.odd);
    });
    if (!range) await this.loadAnomalies();
    setLive(state.panels.some((panel) => panel.series.some((s) => s.running)));
    const fetched = performance.now();
    await this.render();
    await new Promise((resolve) => requestAnimationFrame(() => resolve()));
    const drawn = performance.now();
    Object.assign(this.el.dataset, {
      state: "ready",
      bytes,
      fetchMs: (fetched - began).toFixed(1),
      renderMs: (drawn - fetched).toFixed(1),
      loadMs: (drawn - began).toFixed(1),
    });
  }

  async loadAnomalies(after = null) {
    await Promise.all(this.series.map(async (series) => {
      const query = new URLSearchParams({ metric: series.metric });
      if (after !== null && series.lastAnomaly !== undefined) query.set("after", series.lastAnomaly);
      const found = await get(`${runUrl(series.run.id)}/anomalies?${query}`);
      series.anomalies = after === null ? found : series.anomalies.concat(found);
      series.lastAnomaly = series.anomalies.length ? series.anomalies.at(-1).step : -1;
    }));
  }

  // Live: the points after the last step shown, for each series of a running run.
  async poll() {
    const live = this.series.filter((s) => s.running);
    setLive(state.panels.some((panel) => panel.series.some((s) => s.running)));
    if (!live.length || this.zoom || this.el.dataset.state !== "ready") return;
    let grew = false;
    await Promise.all(live.map(async (series) => {
      // A second of new points gets a tenth of the chart's width; past twice the width
      // drawn, the whole history is downsampled again (below).
      const query = new URLSearchParams({ points: Math.max(50, Math.round(this.points() / 10)) });
      if (series.lastStep !== null) query.set("after", series.lastStep);
      const { data } = await api(this.seriesUrl(series, query));
      series.running = data.running;
      if (!data.total) return;
      grew = true;
      const fresh = entriesOf(data);
      series.entries = series.lastStep === null ? fresh : series.entries.concat(fresh);
      series.odd = series.odd.concat(data.nonfinite);
      series.total += data.total;
      series.lastStep = lastStepOf(series.entries, series.odd);
    }));
    if (!grew) return;
    if (this.series.some((s) => s.entries.length > 2 * this.points())) {
      await this.load(); // too many points appended: downsample the whole history again
      return;
    }
    await this.loadAnomalies(true);
    await this.render();
  }

  traces() {
    const { smooth } = state.chart;
    const traces = [];
    for (const series of this.series) {
      const line = lineOf(series.entries);
      traces.push({
        type: "scatter", mode: "lines", name: series.name, x: line.x, y: line.y, text: line.text,
        hovertemplate: "%{text}<extra>%{fullData.name}</extra>", connectgaps: false,
        line: { color: series.color, width: 1.3 }, opacity: smooth > 0 ? 0.3 : 1,
        showlegend: !(smooth > 0), meta: { role: "series", run: series.run.id, metric: series.metric },
      });
      if (smooth > 0) {
        traces.push({
          type: "scatter", mode: "lines", name: series.name,
          x: series.entries.map((e) => e.x), y: ema(series.entries.map((e) => e.mean), smooth),
          hovertemplate: "step %{x}<br>smoothed %{y:.6g}<extra>%{fullData.name}</extra>",
          line: { color: series.color, width: 2 }, meta: { role: "smoothed" },
        });
      }
      const marked = series.anomalies.filter((a) => typeof a.value === "number");
      if (marked.length) {
        traces.push({
          type: "scatter", mode: "markers", name: `anomalies (${series.name})`, showlegend: false,
          x: marked.map((a) => a.step), y: marked.map((a) => a.value),
          text: marked.map((a) => `${a.kind} (${a.severity})<br>${a.message}`),
          hovertemplate: "step %{x}<br>%{text}<extra></extra>",
          marker: { symbol: "x", size: 10, color: "#d33a2c", line: { width: 2 } },
          meta: { role: "anomalies" },
        });
      }
    }
    return traces;
  }

  shapes() {
    const odd = this.series.flatMap((s) => s.odd).slice(0, MAX_SHAPES);
    return odd.map(([step]) => ({
      type: "line", xref: "x", yref: "paper", x0: step, x1: step, y0: 0, y1: 1,
      line: { color: "#d33a2c", width: 1, dash: "dash" }, opacity: 0.6,
    }));
  }

  async render() {
    const layout = {
      margin: { l: 60, r: 20, t: 10, b: 40 },
      xaxis: { title: { text: "step" }, zeroline: false },
      yaxis: { type: state.chart.log ? "log" : "linear", exponentformat: "e" },
      hovermode: "closest",
      legend: { orientation: "h", y: -0.18 },
      shapes: this.shapes(),
      uirevision: state.chart.log ? "log" : "linear",
    };
    const traces = this.traces();
    await Plotly.react(this.plot, traces, layout, { displaylogo: false, responsive: true });
    if (!this.bound) {
      this.plot.on("plotly_relayout", (event) => this.relayout(event));
      this.bound = true;
    }
    const shown = this.series.reduce((n, s) => n + s.entries.length, 0);
    const total = this.series.reduce((n, s) => n + s.total, 0);
    const odd = this.series.reduce((n, s) => n + s.odd.length, 0);
    Object.assign(this.el.dataset, {
      series: traces.filter((t) => t.meta.role === "series").length,
      points: shown,
      total,
      lastStep: Math.max(...this.series.map((s) => s.lastStep ?? -1)),
    });
    this.foot.replaceChildren(...[
      h("span", {}, `${total.toLocaleString("en")} points${this.zoom ? " in view" : ""}`
        + (shown < total ? `, drawn as ${shown.toLocaleString("en")} min/max buckets` : "")),
      odd ? h("span", { class: "odd" }, `NaN/inf at ${odd} place(s) (red dashed lines)`) : null,
      this.zoom ? h("span", {}, "zoomed: live updates paused") : null].filter(Boolean));
  }

  relayout(event) {
    if (event["xaxis.autorange"]) {
      this.zoom = null;
      this.load().catch(showError);
    } else if ("xaxis.range[0]" in event) {
      this.zoom = [event["xaxis.range[0]"], event["xaxis.range[1]"]];
      this.load(this.zoom).catch(showError);
    }
  }
}

// A series payload (every point, or min/max buckets) as one list of entries.
function entriesOf(data) {
  if (data.kind === "points") {
    return data.step.map((step, i) => ({
      x: step, low: data.value[i], high: data.value[i], mean: data.value[i],
      first: step, last: step, count: 1,
    }));
  }
  return data.step.map((x, i) => ({
    x, low: data.low[i], high: data.high[i], mean: data.mean[i],
    first: data.first_step[i], last: data.last_step[i], count: data.count[i],
  }));
}

function lastStepOf(entries, odd) {
  let last = null;
  for (const entry of entries) if (last === null || entry.last > last) last = entry.last;
  for (const [step] of odd) if (last === null || step > last) last = step;
  return last;
}

// Each bucket is drawn as a vertical stroke from its min to its max (spikes stay visible).
function lineOf(entries) {
  const x = [];
  const y = [];
  const text = [];
  entries.forEach((e, i) => {
    if (e.count === 1 || e.low === e.high) {
      x.push(e.x);
      y.push(e.low);
      text.push(`step ${e.first}: ${fmtNumber(e.low)}`);
      return;
    }
    const label = `steps ${e.first}–${e.last} (${e.count.toLocaleString("en")} points)<br>`
      + `min ${fmtNumber(e.low)}, max ${fmtNumber(e.high)}`;
    const pair = i % 2 ? [e.high, e.low] : [e.low, e.high];
    for (const value of pair) {
      x.push(e.x);
      y.push(value);
      text.push(label);
    }
  });
  return { x, y, text };
}

// Exponential moving average with TensorBoard's debiasing (as `tracelet plot --smooth`).
function ema(values, factor) {
  let last = 0;
  let weight = 0;
  return values.map((value) => {
    if (typeof value === "number" && Number.isFinite(value)) {
      last = factor * last + (1 - factor) * value;
      weight = factor * weight + (1 - factor);
    }
    return weight ? last / weight : null;
  });
}

// -- compare ---------------------------------------------------------------------------

async function showCompare(main, params) {
  let ids = listParam(params, "runs");
  if (ids.length < 2) ids = [...state.selected];
  if (ids.length < 2) {
    main.replaceChildren(h("h1", {}, "Compare"),
      h("p", { class: "empty" }, "Select two or more runs in the Runs table, then Compare."));
    return;
  }
  const found = await get(`/api/compare?runs=${ids.map(encodeURIComponent).join(",")}`);
  const names = found.runs.map((run) => run.name);
  const head = ["", ...names];
  const runRows = [
    ["id", ...found.runs.map((r) => h("a", { href: `#/run/${r.id}`, class: "mono" }, r.id.slice(0, 12)))],
    ["project", ...found.runs.map((r) => r.project)],
    ["status", ...found.runs.map((r) => statusBadge(r.status))],
    ["started", ...found.runs.map((r) => fmtTime(r.created_at))],
    ["duration", ...found.runs.map((r) => fmtDuration(r.duration_s))],
  ];
  const paramRows = Object.entries(found.params).map(([key, values]) =>
    [key, ...values.map((v) => (v === null ? "–" : JSON.stringify(v)))]);
  const metricRows = Object.entries(found.metrics).map(([name, sides]) =>
    [h("a", { href: `#/charts?runs=${ids.join(",")}&metrics=${encodeURIComponent(name)}` }, name),
      ...sides.map((s) => (s ? fmtNumber(s.last) : "missing"))]);
  main.replaceChildren(
    h("h1", {}, `Compare ${names.length} runs`),
    h("p", {}, h("a", { href: `#/charts?runs=${ids.join(",")}` }, "Chart these runs")),
    card("Runs", table(head, runRows)),
    card("Parameters that differ", table(["parameter", ...names], paramRows,
      { empty: "every parameter is the same" })),
    card("Final metrics (last value)", table(["metric", ...names], metricRows,
      { numeric: names, empty: "no metric in common" })));
  main.querySelector("section:nth-of-type(2) table")?.setAttribute("id", "compare-params");
  main.querySelector("section:nth-of-type(3) table")?.setAttribute("id", "compare-metrics");
}

// -- one run ---------------------------------------------------------------------------

async function showRun(main, params, id) {
  if (!id) throw new Error("no run given");
  const sections = {};
  const names = ["summary", "deliveries", "metrics", "params", "anomalies", "checkpoints",
    "texts", "images", "artifacts"];
  for (const name of names) sections[name] = h("div", { id: `run-${name}` });
  const title = h("h1", {});
  main.replaceChildren(title, sections.summary,
    h("div", { class: "grid" },
      card("Delivery per backend", sections.deliveries),
      card("Metrics", sections.metrics),
      card("Parameters and tags", sections.params),
      card("Anomalies", sections.anomalies)),
    h("div", { style: "height:1rem" }),
    card("Checkpoints", sections.checkpoints),
    card("Texts", sections.texts),
    card("Images", sections.images),
    card("Artifacts", sections.artifacts));
  const refresh = async (everything) => {
    const run = await get(runUrl(id));
    title.replaceChildren(run.name, " ", statusBadge(run.status));
    fillSummary(sections.summary, run);
    fillDeliveries(sections.deliveries, run);
    fillParams(sections.params, run);
    const jobs = [get(`${runUrl(run.id)}/metrics`).then((m) => fillMetrics(sections.metrics, run, m)),
      get(`${runUrl(run.id)}/anomalies`).then((a) => fillAnomalies(sections.anomalies, a))];
    if (everything) {
      jobs.push(
        get(`${runUrl(run.id)}/checkpoints?limit=100`).then((c) => fillCheckpoints(sections.checkpoints, c)),
        get(`${runUrl(run.id)}/texts?limit=200`).then((t) => fillTexts(sections.texts, t)),
        get(`${runUrl(run.id)}/images`).then((i) => fillImages(sections.images, i)),
        get(`${runUrl(run.id)}/artifacts`).then((a) => fillArtifacts(sections.artifacts, a)));
    }
    await Promise.all(jobs);
    return run;
  };
  const run = await refresh(true);
  if (run.status === "running") {
    setLive(true);
    every(REFRESH_MS, async () => {
      const now = await refresh(false);
      if (now.status !== "running") stopTimers();
    });
  }
}

function fillSummary(el, run) {
  const counts = run.counts;
  el.replaceChildren(h("div", { class: "card" }, table(["id", "project", "host", "started",
    "duration", "batches", "checkpoints", "texts", "images", "artifacts", "tags"], [[
    h("span", { class: "mono" }, run.id), run.project, run.host, fmtTime(run.created_at),
    run.status === "running" ? "running" : fmtDuration(run.duration_s), run.batches,
    counts.checkpoints, counts.texts, counts.images, counts.artifacts, tagList(run.tags),
  ]])));
}

function fillDeliveries(el, run) {
  el.replaceChildren(table(["backend", "state"], run.deliveries.map((d) =>
    [d.backend, h("span", { class: d.phase === "failed" ? "severity-critical" : null }, d.description)]),
  { empty: "the local store only" }));
}

function fillMetrics(el, run, metrics) {
  el.replaceChildren(table(["metric", "last", "step", "min", "max", "points"],
    Object.entries(metrics).map(([name, m]) => [
      h("a", { href: `#/charts?runs=${run.id}&metrics=${encodeURIComponent(name)}` }, name),
      fmtNumber(m.last), fmtNumber(m.step), fmtNumber(m.min), fmtNumber(m.max), fmtNumber(m.count),
    ]), { numeric: ["last", "step", "min", "max", "points"], empty: "no metric yet" }));
}

function fillParams(el, run) {
  const rows = Object.entries(run.params).map(([key, value]) => [key, JSON.stringify(value)]);
  el.replaceChildren(table(["parameter", "value"], rows, { empty: "no parameters" }),
    h("p", {}, tagList(run.tags)));
}

function fillAnomalies(el, anomalies) {
  el.replaceChildren(table(["step", "metric", "kind", "value", "message"],
    anomalies.map((a) => [fmtNumber(a.step), a.metric,
      h("span", { class: `severity-${a.severity}` }, a.kind), fmtNumber(a.value), a.message]),
    { numeric: ["step"], empty: "no anomalies" }));
}

function fillCheckpoints(el, checkpoints) {
  el.replaceChildren(table(["step", "time", "metrics", "gradient stats", "samples"],
    checkpoints.map((c) => [fmtNumber(c.step), fmtTime(c.timestamp),
      details(c.metrics), details(c.gradient_stats), details(c.samples)]),
    { numeric: ["step"], empty: "no checkpoints" }));
}

function details(value) {
  const size = Array.isArray(value) ? value.length : Object.keys(value || {}).length;
  if (!size) return "–";
  return h("details", {}, h("summary", {}, `${size} item(s)`),
    h("pre", { class: "text" }, JSON.stringify(value, null, 1)));
}

function fillTexts(el, texts) {
  el.replaceChildren(...(texts.length ? texts.map((t) => h("div", {},
    h("span", { class: "muted" }, `${t.name} @ step ${t.step}`), h("pre", { class: "text" }, t.text)))
    : [h("p", { class: "empty" }, "no texts")]));
}

function fillImages(el, images) {
  el.replaceChildren(images.length ? h("div", { class: "images" }, images.map((image) =>
    h("figure", {}, h("img", { src: image.url, alt: image.name, loading: "lazy" }),
      h("figcaption", {}, `${image.name} @ step ${image.step}`))))
    : h("p", { class: "empty" }, "no images"));
}

function fillArtifacts(el, artifacts) {
  el.replaceChildren(table(["name", "path", "kind", "size", "sha256", "version", ""],
    artifacts.map((a) => [a.name, h("span", { class: "mono" }, a.artifact_path), a.kind,
      fmtBytes(a.size_bytes), h("span", { class: "mono" }, a.sha256.slice(0, 12)), a.version,
      a.exists ? h("a", { href: a.url }, "download") : h("span", { class: "muted" }, "file gone")]),
    { empty: "no artifacts" }));
}

// -- start -----------------------------------------------------------------------------

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", async () => {
  route();
  try {
    const store = await get("/api/store");
    document.getElementById("store").textContent = `${store.path} · ${store.runs} runs`;
  } catch (error) {
    showError(error);
  }
});
