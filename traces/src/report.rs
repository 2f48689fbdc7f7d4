//! `aha report`: one self-contained HTML file about a run — charts of its metrics drawn as inline
//! SVG, and a trace browser (inline JavaScript over embedded JSON). No network, no CDN: the file
//! opens anywhere, and can be regenerated at any time, also while the run goes on.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Value};

use crate::reader::{TraceFilter, TraceReader, REFLECTION_PHRASES};
use crate::TraceError;

/// Most completions embedded for the browser (the latest steps first); the store has them all.
const BROWSER_LIMIT: usize = 3000;

const PALETTE: [&str; 6] = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];

/// One chart: a title and named series of (step, value) points.
struct Chart {
    title: &'static str,
    series: Vec<(String, Vec<(f64, f64)>)>,
}

/// Builds the report of the run whose metrics are at `metrics_path` and traces at `traces_path`.
pub fn render_report(title: &str, metrics_path: &Path, traces_path: &Path) -> Result<String, TraceError> {
    let metrics: Vec<Value> = match std::fs::read_to_string(metrics_path) {
        Ok(text) => text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect(),
        Err(_) => Vec::new(),
    };
    // Only a missing store is "no traces yet"; one that cannot be read is an error.
    let reader = if traces_path.exists() { Some(TraceReader::open(traces_path)?) } else { None };
    let phrases: Vec<String> = REFLECTION_PHRASES.iter().map(|p| p.to_string()).collect();
    let statistics = match &reader {
        Some(reader) => reader.statistics(&phrases)?,
        None => Vec::new(),
    };

    let series = |key: &str| -> Vec<(f64, f64)> {
        metrics.iter().filter_map(|m| Some((m["step"].as_f64()?, m[key].as_f64()?))).collect()
    };
    let named = |pairs: &[(&str, &str)]| -> Vec<(String, Vec<(f64, f64)>)> {
        pairs.iter().map(|(label, key)| (label.to_string(), series(key))).filter(|(_, s)| !s.is_empty()).collect()
    };
    let mut charts = vec![
        Chart {
            title: "Reward and accuracy",
            series: named(&[
                ("reward", "reward_mean"),
                ("accuracy", "accuracy"),
                ("held-out accuracy", "eval_accuracy"),
            ]),
        },
        Chart {
            title: "Completion length (tokens)",
            series: named(&[
                ("mean", "completion_length_mean"),
                ("min", "completion_length_min"),
                ("max", "completion_length_max"),
            ]),
        },
        Chart {
            title: "Reflection phrases (share of completions)",
            series: phrases
                .iter()
                .map(|p| (p.clone(), statistics.iter().map(|s| (s.step as f64, s.phrases[p])).collect::<Vec<_>>()))
                .filter(|(_, points)| points.iter().any(|&(_, y)| y > 0.0))
                .collect(),
        },
        Chart {
            title: "Tool use",
            series: named(&[
                ("calls per completion", "tool_calls_per_completion"),
                ("share using the tool", "tool_use_frac"),
                ("share of calls failing", "tool_error_frac"),
            ]),
        },
        Chart { title: "KL to the reference", series: named(&[("kl", "kl")]) },
        Chart { title: "Entropy", series: named(&[("entropy", "entropy")]) },
        Chart {
            title: "Clip fraction",
            series: named(&[("low", "clip_low"), ("high", "clip_high"), ("either", "clip_region")]),
        },
        Chart {
            title: "Seconds per step",
            series: named(&[
                ("generation", "generation_s"),
                ("waiting for rewards", "reward_wait_s"),
                ("training", "train_s"),
                ("step", "step_s"),
            ]),
        },
    ];
    charts.retain(|c| !c.series.is_empty());

    let traces: Vec<Value> = match &reader {
        Some(reader) => {
            let mut rows = reader.query(&TraceFilter::default())?;
            let keep = rows.len().saturating_sub(BROWSER_LIMIT);
            rows.drain(..keep);
            rows.into_iter()
                .map(|r| {
                    json!({"step": r.step, "prompt_id": r.prompt_id, "prompt": r.prompt, "sample": r.sample_index,
                           "text": r.text, "tokens": r.tokens, "finish": r.finish_reason, "reward": r.reward,
                           "rewards": r.rewards, "advantage": r.advantage})
                })
                .collect()
        }
        None => Vec::new(),
    };

    let title = escape(title);
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title} · aha report</title><style>{STYLE}</style></head><body>\
         <h1>{title}</h1><p class=\"meta\">{} steps · {} completions in the browser{}</p><div class=\"charts\">",
        metrics.len(),
        traces.len(),
        if reader.is_none() { " · no trace store yet" } else { "" }
    );
    for chart in &charts {
        html.push_str(&svg_chart(chart));
    }
    if charts.is_empty() {
        html.push_str("<p>No metrics yet.</p>");
    }
    // `<` only occurs inside JSON strings, where \u003c is the same character: the data can never
    // close its script element or open a tag, whatever the model wrote.
    let data = serde_json::to_string(&traces).expect("traces serialise").replace('<', "\\u003c");
    let _ = write!(
        html,
        "</div><h2>Traces</h2><div class=\"controls\">\
         <input id=\"q\" placeholder=\"regular expression over the completion\"> \
         step <select id=\"step\"><option value=\"\">all</option></select> \
         prompt <select id=\"prompt\"><option value=\"\">all</option></select> \
         reward &ge; <input id=\"minr\" type=\"number\" step=\"0.1\" style=\"width:5em\"> \
         <span id=\"count\"></span></div><div id=\"list\"></div>\
         <script id=\"traces\" type=\"application/json\">{data}</script><script>{SCRIPT}</script></body></html>"
    );
    Ok(html)
}

/// A line chart as inline SVG: axes with a few ticks, one polyline per series, a legend.
fn svg_chart(chart: &Chart) -> String {
    let (width, height, left, right, top, bottom) = (460.0, 240.0, 52.0, 12.0, 28.0, 56.0);
    let points = chart.series.iter().flat_map(|(_, s)| s.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in points {
        if x.is_finite() && y.is_finite() {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
    }
    if !x0.is_finite() {
        return String::new();
    }
    if x1 == x0 {
        x1 = x0 + 1.0;
    }
    if y1 == y0 {
        y1 = y0 + if y0 == 0.0 { 1.0 } else { y0.abs() * 0.1 };
    }
    y0 = y0.min(0.0).max(if y0 > 0.0 { 0.0 } else { y0 });
    let sx = |x: f64| left + (x - x0) / (x1 - x0) * (width - left - right);
    let sy = |y: f64| height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom);
    let mut svg = format!(
        "<figure><svg viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" role=\"img\">\
         <text x=\"{left}\" y=\"18\" class=\"title\">{}</text>",
        escape(chart.title)
    );
    for i in 0..=4 {
        let y = y0 + (y1 - y0) * i as f64 / 4.0;
        let _ = write!(
            svg,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{py:.1}\" y2=\"{py:.1}\" class=\"grid\"/><text x=\"{}\" y=\"{:.1}\" class=\"tick\" text-anchor=\"end\">{}</text>",
            width - right,
            left - 4.0,
            sy(y) + 4.0,
            short(y),
            py = sy(y)
        );
    }
    // Steps are integers: at most five ticks, on whole steps.
    let ticks = ((x1 - x0).round() as usize).clamp(1, 4);
    for i in 0..=ticks {
        let x = (x0 + (x1 - x0) * i as f64 / ticks as f64).round();
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" class=\"tick\" text-anchor=\"middle\">{}</text>",
            sx(x),
            height - bottom + 14.0,
            short(x)
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{:.1}\" y=\"{}\" class=\"tick\" text-anchor=\"middle\">step</text>",
        (left + width - right) / 2.0,
        height - bottom + 28.0
    );
    for (i, (name, points)) in chart.series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let path: Vec<String> = points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.8\" points=\"{}\"/>",
            path.join(" ")
        );
        if path.len() == 1 {
            let (x, y) = path[0].split_once(',').expect("a point");
            let _ = write!(svg, "<circle cx=\"{x}\" cy=\"{y}\" r=\"3\" fill=\"{colour}\"/>");
        }
        // Legend: rows of three under the axis.
        let lx = left + (i % 3) as f64 * 135.0;
        let ly = height - 20.0 + (i / 3) as f64 * 14.0;
        let _ = write!(
            svg,
            "<rect x=\"{lx}\" y=\"{:.1}\" width=\"10\" height=\"3\" fill=\"{colour}\"/><text x=\"{}\" y=\"{ly:.1}\" class=\"legend\">{}</text>",
            ly - 4.0,
            lx + 14.0,
            escape(name)
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

fn short(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude == 0.0 {
        "0".into()
    } else if magnitude >= 1000.0 || magnitude < 0.01 {
        format!("{value:.1e}")
    } else if magnitude >= 10.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:24px;color:#111}h1{font-size:20px;margin:0 0 4px}\
.meta{color:#555;margin:0 0 16px}.charts{display:flex;flex-wrap:wrap;gap:8px}figure{margin:0;border:1px solid #e5e7eb;border-radius:6px}\
.grid{stroke:#eee}.tick{font-size:10px;fill:#555}.title{font-size:13px;font-weight:600}.legend{font-size:11px;fill:#333}\
.controls{margin:8px 0}.controls input,.controls select{font:inherit}.trace{border-top:1px solid #eee;padding:8px 0}\
.head{font-weight:600}.good{color:#16a34a}.bad{color:#dc2626}.prompt{color:#666;white-space:pre-wrap;font-size:12px;max-height:4em;overflow:auto}\
.text{white-space:pre-wrap;font-family:ui-monospace,monospace;font-size:12px}";

const SCRIPT: &str = r#"
const traces = JSON.parse(document.getElementById('traces').textContent);
const $ = id => document.getElementById(id);
const fill = (select, values) => { for (const v of values) { const o = document.createElement('option'); o.value = o.textContent = v; select.appendChild(o); } };
fill($('step'), [...new Set(traces.map(t => t.step))]);
fill($('prompt'), [...new Set(traces.map(t => t.prompt_id))].sort());
function render() {
  let re = null;
  try { re = $('q').value ? new RegExp($('q').value, 'i') : null; $('q').style.background = ''; } catch (e) { $('q').style.background = '#fee'; }
  const step = $('step').value, prompt = $('prompt').value, minr = parseFloat($('minr').value);
  const shown = traces.filter(t => (!step || String(t.step) === step) && (!prompt || t.prompt_id === prompt)
    && (isNaN(minr) || (t.reward !== null && t.reward >= minr)) && (!re || re.test(t.text)));
  $('count').textContent = shown.length + ' of ' + traces.length;
  const list = $('list'); list.textContent = '';
  for (const t of shown.slice(0, 200)) {
    const div = document.createElement('div'); div.className = 'trace';
    const head = document.createElement('div'); head.className = 'head ' + (t.reward > 0 ? 'good' : 'bad');
    head.textContent = `step ${t.step} · ${t.prompt_id} · sample ${t.sample} · reward ${t.reward === null ? 'unjudged' : t.reward.toFixed(3)}`
      + (t.advantage === null ? '' : ` · advantage ${t.advantage.toFixed(3)}`) + ` · ${t.tokens} tokens, ${t.finish}`;
    const p = document.createElement('div'); p.className = 'prompt'; p.textContent = t.prompt;
    const x = document.createElement('div'); x.className = 'text'; x.textContent = t.text;
    div.append(head, p, x); list.appendChild(div);
  }
}
for (const id of ['q', 'step', 'prompt', 'minr']) $(id).addEventListener('input', render);
render();
"#;
