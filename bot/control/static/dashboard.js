// The backstop dashboard's script: token handling, the live stream, charts, actions.
//
// The token the operator pastes stays in this tab's sessionStorage and travels only as
// an Authorization header (never in a URL or a cookie): a page from another site cannot
// make the browser send it, which is what keeps the actions safe from CSRF. The live
// stream is read with fetch() because an EventSource cannot send that header.
"use strict";
(() => {
  const TOKEN_KEY = "backstop.token";
  const MAX_POINTS = 900;
  const $ = (selector) => document.querySelector(selector);
  const compact = new Intl.NumberFormat("en", { notation: "compact", maximumFractionDigits: 2 });

  // Exposed for the operator's console and for the browser tests.
  const state = { charts: {}, updates: 0, name: null, role: null, status: null };
  window.backstop = state;

  const token = () => sessionStorage.getItem(TOKEN_KEY);

  function api(path, options = {}) {
    const headers = { ...(options.headers || {}) };
    const t = token();
    if (t) headers.Authorization = "Bearer " + t;
    return fetch(path, { ...options, headers, cache: "no-store", credentials: "omit" });
  }

  async function errorText(res) {
    try {
      const data = await res.json();
      return data.error || res.statusText;
    } catch {
      return `${res.status} ${res.statusText}`;
    }
  }

  function showTokenError(text) {
    const el = $("#token-error");
    el.textContent = text ? `Token refused: ${text}` : "";
    el.hidden = !text;
  }

  function setConnection(text) {
    const el = $("#connection");
    el.dataset.state = text;
    el.textContent = text;
  }

  // ---- token -----------------------------------------------------------------------------

  function setupToken() {
    $("#token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("#token-input").value.trim();
      if (!value) return;
      sessionStorage.setItem(TOKEN_KEY, value);
      $("#token-input").value = "";
      start();
    });
    $("#forget-token").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      window.location.reload();
    });
  }

  // ---- the live stream (overview) ----------------------------------------------------------

  let generation = 0;

  async function stream() {
    const mine = ++generation;
    let delay = 1000;
    while (mine === generation) {
      setConnection("connecting");
      let res = null;
      try {
        res = await api("/dashboard/api/stream");
      } catch {
        res = null;
      }
      if (res && (res.status === 401 || res.status === 403)) {
        showTokenError(await errorText(res));
        setConnection("refused");
        return;
      }
      if (res && res.ok && res.body) {
        showTokenError("");
        setConnection("live");
        delay = 1000;
        try {
          await readEvents(res.body, mine);
        } catch {
          // the daemon went away mid-stream: retry below
        }
      }
      if (mine !== generation) return;
      setConnection("disconnected, retrying");
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 10000);
    }
  }

  async function readEvents(body, mine) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      if (mine !== generation) {
        reader.cancel().catch(() => {});
        return;
      }
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const chunk = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = "message";
        let data = "";
        for (const line of chunk.split("\n")) {
          if (line.startsWith("event: ")) name = line.slice(7);
          else if (line.startsWith("data: ")) data += line.slice(6);
        }
        if (data) onEvent(name, JSON.parse(data));
      }
    }
  }

  function onEvent(name, data) {
    if (name === "hello") {
      state.name = data.name;
      state.role = data.role;
      $("#who").textContent = data.name ? `${data.name} (${data.role})` : "";
    } else if (name === "update") {
      render(data);
    }
  }

  const sections = new Map();

  function marketSection(symbol) {
    let section = sections.get(symbol);
    if (!section) {
      section = document.createElement("section");
      section.className = "market";
      section.dataset.symbol = symbol;
      const info = document.createElement("div");
      info.className = "info";
      const charts = document.createElement("div");
      charts.className = "charts";
      section.append(info, charts);
      $("#markets").append(section);
      sections.set(symbol, section);
    }
    return section;
  }

  function render(update) {
    state.status = update.status;
    $("#summary").innerHTML = update.summary;
    $("#actions").hidden = false;
    for (const market of update.markets) {
      marketSection(market.symbol).querySelector(".info").innerHTML = market.html;
    }
    // The [options] panel: server-rendered (escaped) like the markets; absent, hidden.
    const options = $("#options");
    if (options) {
      options.hidden = !update.options;
      if (update.options) options.innerHTML = update.options;
    }
    fillMarkets(update.markets.map((m) => m.symbol));
    for (const [symbol, columns] of Object.entries(update.depth)) {
      updateCharts(symbol, columns, update.reset);
    }
    state.updates += 1;
    document.body.dataset.updates = String(state.updates);
  }

  function fillMarkets(symbols) {
    const select = $("#market");
    const have = Array.from(select.options).map((o) => o.value);
    if (have.join("\n") === symbols.join("\n")) return;
    select.replaceChildren(
      ...symbols.map((s) => {
        const option = document.createElement("option");
        option.value = s;
        option.textContent = s;
        return option;
      }),
    );
  }

  // ---- charts ------------------------------------------------------------------------------

  function createCharts(symbol, bands) {
    const holder = marketSection(symbol).querySelector(".charts");
    holder.replaceChildren();
    const charts = bands.map((band, i) => {
      const figure = document.createElement("figure");
      figure.className = "depth-chart";
      figure.dataset.band = String(band);
      figure.dataset.bandIndex = String(i);
      const caption = document.createElement("figcaption");
      caption.textContent =
        `Depth within ${band} bps of mid (quote; time in UTC, data time)` +
        (i === 0 ? ": the detector's band, dashed: the fracture threshold" : "");
      figure.append(caption);
      holder.append(figure);
      const series = [
        {},
        { label: "bid", stroke: "#1a7f37", width: 1.5, points: { show: false } },
        { label: "ask", stroke: "#cf222e", width: 1.5, points: { show: false } },
      ];
      if (i === 0) {
        series.push(
          { label: "threshold bid", stroke: "#1a7f37", width: 1, dash: [6, 4], points: { show: false } },
          { label: "threshold ask", stroke: "#cf222e", width: 1, dash: [6, 4], points: { show: false } },
        );
      }
      const data = series.map(() => []);
      const plot = new uPlot(
        {
          width: Math.max(320, holder.clientWidth - 8),
          height: 170,
          series,
          scales: { x: { time: true } },
          axes: [{}, { size: 64, values: (u, values) => values.map((v) => compact.format(v)) }],
          tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"),
          legend: { live: false },
        },
        data,
        figure,
      );
      return { plot, data, figure };
    });
    const entry = { bands: bands.join(","), charts };
    state.charts[symbol] = entry;
    return entry;
  }

  function updateCharts(symbol, columns, reset) {
    let entry = state.charts[symbol];
    if (!entry || reset || entry.bands !== columns.bands_bps.join(",")) {
      entry = createCharts(symbol, columns.bands_bps);
    }
    if (!columns.t.length) return;
    entry.charts.forEach((chart, i) => {
      const d = chart.data;
      d[0].push(...columns.t);
      d[1].push(...columns.bid[i]);
      d[2].push(...columns.ask[i]);
      if (i === 0) {
        d[3].push(...columns.threshold_bid);
        d[4].push(...columns.threshold_ask);
      }
      const extra = d[0].length - MAX_POINTS;
      if (extra > 0) d.forEach((s) => s.splice(0, extra));
      chart.plot.setData(d);
      chart.figure.dataset.points = String(d[0].length);
      chart.figure.dataset.lastTs = String(d[0][d[0].length - 1]);
    });
  }

  window.addEventListener("resize", () => {
    for (const entry of Object.values(state.charts)) {
      for (const chart of entry.charts) {
        const width = Math.max(320, chart.figure.parentElement.clientWidth - 8);
        chart.plot.setSize({ width, height: 170 });
      }
    }
  });

  // ---- actions -------------------------------------------------------------------------------

  function result(ok, text) {
    const el = $("#action-result");
    el.textContent = text;
    el.dataset.ok = ok === null ? "pending" : String(ok);
  }

  function reason() {
    const text = $("#reason").value.trim();
    if (!text) {
      result(false, "Give a reason first: it is journaled with the action.");
      $("#reason").focus();
      return null;
    }
    return text;
  }

  async function act(path, body) {
    result(null, `${path}: sending…`);
    let res;
    try {
      res = await api(path, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
    } catch (error) {
      result(false, `${path}: the daemon did not answer (${error})`);
      return;
    }
    if (res.ok) {
      const data = await res.json().catch(() => ({}));
      result(true, data.message || `${path}: done`);
    } else {
      result(false, `${path} refused (${res.status}): ${await errorText(res)}`);
    }
  }

  function setupActions() {
    $("#kill").addEventListener("click", () => {
      if (!reason()) return;
      $("#kill-confirm").hidden = false;
      $("#kill-yes").focus();
    });
    $("#kill-no").addEventListener("click", () => {
      $("#kill-confirm").hidden = true;
      result(null, "kill cancelled");
    });
    $("#kill-yes").addEventListener("click", () => {
      $("#kill-confirm").hidden = true;
      const text = reason();
      if (text) act("/kill", { reason: text });
    });
    $("#cancel-all").addEventListener("click", () => {
      const text = reason();
      if (text) act("/cancel-all", { reason: text });
    });
    $("#pause").addEventListener("click", () => {
      const text = reason();
      if (text) act("/pause", { symbol: $("#market").value, reason: text });
    });
    $("#unpause").addEventListener("click", () => act("/unpause", { symbol: $("#market").value }));
    $("#resume").addEventListener("click", () => {
      const text = reason();
      if (text) act("/resume", { reason: text });
    });
  }

  // ---- episodes and audit (server-rendered fragments) ------------------------------------------

  async function loadFragment(path, target) {
    const res = await api(path);
    if (res.status === 401 || res.status === 403) {
      showTokenError(await errorText(res));
      return false;
    }
    showTokenError("");
    if (!res.ok) {
      const p = document.createElement("p");
      p.className = "error";
      p.textContent = `${path}: ${await errorText(res)}`;
      target.replaceChildren(p);
      return false;
    }
    target.innerHTML = await res.text();
    return true;
  }

  async function showEpisode(id) {
    const target = $("#episode");
    const query = "?id=" + encodeURIComponent(id);
    if (!(await loadFragment("/dashboard/api/episode" + query, target))) return;
    const figure = target.querySelector("figure.episode-chart");
    const res = await api("/dashboard/api/episode.png" + query);
    if (!res.ok) {
      figure.textContent = `chart: ${await errorText(res)}`;
      return;
    }
    const img = new Image();
    img.className = "episode-png";
    img.alt = `Episode ${id}: price, quotes and fills, depth against the threshold, inventory, collateral, PnL`;
    img.src = URL.createObjectURL(await res.blob());
    figure.replaceChildren(img);
    target.scrollIntoView({ behavior: "smooth" });
  }

  function setupEpisodes() {
    $("#episodes").addEventListener("click", (event) => {
      const button = event.target.closest("button.show-episode");
      if (button) showEpisode(button.dataset.episode);
    });
  }

  // ---- start -------------------------------------------------------------------------------

  function start() {
    const has = Boolean(token());
    $("#forget-token").hidden = !has;
    if (!has) return;
    const page = document.body.dataset.page;
    if (page === "overview") stream();
    else if (page === "episodes") loadFragment("/dashboard/api/episodes", $("#episodes"));
    else if (page === "audit") loadFragment("/dashboard/api/audit", $("#audit"));
  }

  document.addEventListener("DOMContentLoaded", () => {
    setupToken();
    const page = document.body.dataset.page;
    if (page === "overview") setupActions();
    if (page === "episodes") setupEpisodes();
    start();
  });
})();
