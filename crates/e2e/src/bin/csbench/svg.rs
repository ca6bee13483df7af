//! docs/bench-b2.svg: a hand-written bar chart of B2 (no dependencies).

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `text` in lines of about `width` characters, broken at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for wd in text.split_whitespace() {
        let cur = lines.last().map(|l| l.len()).unwrap_or(0);
        if cur > 0 && cur + wd.len() > width {
            lines.push(String::new());
        }
        if let Some(l) = lines.last_mut() {
            if !l.is_empty() {
                l.push(' ');
            }
            l.push_str(wd);
        }
    }
    lines
}

/// Bars (label, ms) with dashed lines at the limits (label, ms); `rtt` ms per RTT unit.
pub fn b2_chart(bars: &[(String, f64)], limits: &[(String, f64)], rtt: f64) -> String {
    let (w, h) = (760.0, 440.0);
    let (left, right, top, bottom) = (70.0, 190.0, 50.0, 90.0);
    let plot_w = w - left - right;
    let plot_h = h - top - bottom;
    let max_v = bars
        .iter()
        .map(|b| b.1)
        .chain(limits.iter().map(|l| l.1))
        .fold(0.0f64, f64::max);
    // Axis up to the next multiple of 50 ms above the largest value.
    let top_v = ((max_v * 1.08) / 50.0).ceil().max(1.0) * 50.0;
    let y = |v: f64| top + plot_h * (1.0 - v / top_v);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" \
         font-family=\"DejaVu Sans, Arial, sans-serif\" font-size=\"12\">\n\
         <rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">\
         B2: time until the first echo byte is back, 3-hop SOCKS5 chain, link RTT {rtt:.0} ms</text>\n",
        w / 2.0
    );
    // Grid and y axis.
    let step = if top_v > 400.0 { 100.0 } else { 50.0 };
    let mut v = 0.0;
    while v <= top_v + 0.1 {
        let yy = y(v);
        s.push_str(&format!(
            "<line x1=\"{left}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{v:.0}</text>\n",
            left + plot_w,
            left - 6.0,
            yy + 4.0
        ));
        v += step;
    }
    s.push_str(&format!(
        "<text x=\"18\" y=\"{:.1}\" transform=\"rotate(-90 18 {:.1})\" text-anchor=\"middle\">ms (median)</text>\n\
         <line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{:.1}\" stroke=\"#333\"/>\n\
         <line x1=\"{left}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#333\"/>\n",
        top + plot_h / 2.0,
        top + plot_h / 2.0,
        top + plot_h,
        top + plot_h,
        left + plot_w,
        top + plot_h
    ));
    // Bars.
    let colors = ["#9e9e9e", "#d9822b", "#4a90d9", "#2e7d32", "#7b1fa2"];
    let n = bars.len().max(1) as f64;
    let slot = plot_w / n;
    let bw = slot * 0.6;
    for (i, (label, ms)) in bars.iter().enumerate() {
        let x = left + slot * i as f64 + (slot - bw) / 2.0;
        let yy = y(*ms);
        let color = colors.get(i % colors.len()).copied().unwrap_or("#888");
        s.push_str(&format!(
            "<rect x=\"{x:.1}\" y=\"{yy:.1}\" width=\"{bw:.1}\" height=\"{:.1}\" fill=\"{color}\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-weight=\"bold\">{ms:.0} ms</text>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#444\">{:.1} RTT</text>\n",
            top + plot_h - yy,
            x + bw / 2.0,
            yy - 20.0,
            x + bw / 2.0,
            yy - 6.0,
            ms / rtt
        ));
        // Label under the bar, wrapped at spaces.
        for (k, l) in wrap(label, 16).iter().enumerate() {
            s.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
                x + bw / 2.0,
                top + plot_h + 18.0 + 14.0 * k as f64,
                esc(l)
            ));
        }
    }
    // Limits: a dashed line each, labelled on the right in two lines ("NAME", "N RTT = M ms").
    for (label, ms) in limits {
        let yy = y(*ms);
        let (name, rest) = label.split_once(", ").unwrap_or((label.as_str(), ""));
        s.push_str(&format!(
            "<line x1=\"{left}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\" stroke=\"#c62828\" \
             stroke-width=\"1.5\" stroke-dasharray=\"6 4\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" fill=\"#c62828\">{}</text>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" fill=\"#c62828\">{} = {ms:.0} ms</text>\n",
            left + plot_w,
            left + plot_w + 6.0,
            yy - 2.0,
            esc(name),
            left + plot_w + 6.0,
            yy + 12.0,
            esc(rest)
        ));
    }
    s.push_str("</svg>\n");
    s
}

/// The color of a bar, by what it shows (the same variant has the same color in every panel).
fn color_of(label: &str) -> &'static str {
    let l = label.to_lowercase();
    if l.contains("proxychains") {
        "#d9822b"
    } else if l.contains("supervisor") && !l.contains("no-supervisor") {
        "#2e7d32"
    } else if l.contains("chainsocks") {
        "#4a90d9"
    } else if l.contains("empty") {
        "#c8c8c8"
    } else {
        "#9e9e9e"
    }
}

/// One bar panel at vertical offset `y0`: groups of (label, value) bars, value labels with
/// `digits` decimals, a zero line (values may be slightly negative: a null test).
fn panel(
    s: &mut String,
    y0: f64,
    title: &str,
    unit: &str,
    groups: &[(String, Vec<(String, f64)>)],
    digits: usize,
) {
    let (w, h) = (760.0, 330.0);
    let (left, right, top, bottom) = (70.0, 20.0, 40.0, 70.0);
    let plot_w = w - left - right;
    let plot_h = h - top - bottom;
    let vals = groups.iter().flat_map(|(_, b)| b.iter().map(|x| x.1));
    let max_v = vals.clone().fold(0.0f64, f64::max);
    let min_v = vals.fold(0.0f64, f64::min);
    // A round step: 1, 2 or 5 × 10^k, about five grid lines.
    let span = (max_v - min_v).max(1e-9) * 1.15;
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|st| *st >= raw)
        .unwrap_or(10.0 * mag);
    let lo = (min_v / step).floor().min(0.0) * step;
    let hi = ((max_v * 1.15) / step).ceil().max(1.0) * step;
    let y = |v: f64| y0 + top + plot_h * (1.0 - (v - lo) / (hi - lo));
    s.push_str(&format!(
        "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">{}</text>\n",
        w / 2.0,
        y0 + 24.0,
        esc(title)
    ));
    let mut v = lo;
    while v <= hi + step * 0.01 {
        let yy = y(v);
        s.push_str(&format!(
            "<line x1=\"{left}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\" stroke=\"{}\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{v:.0}</text>\n",
            left + plot_w,
            if v.abs() < step * 0.01 {
                "#333"
            } else {
                "#ddd"
            },
            left - 6.0,
            yy + 4.0
        ));
        v += step;
    }
    s.push_str(&format!(
        "<text x=\"18\" y=\"{:.1}\" transform=\"rotate(-90 18 {:.1})\" text-anchor=\"middle\">{}</text>\n",
        y0 + top + plot_h / 2.0,
        y0 + top + plot_h / 2.0,
        esc(unit)
    ));
    let n_bars: usize = groups.iter().map(|(_, b)| b.len()).sum();
    let gap = 0.8; // between groups, in bar slots
    let slots = n_bars as f64 + gap * (groups.len().saturating_sub(1)) as f64;
    let slot = plot_w / slots.max(1.0);
    let bw = slot * 0.7;
    let mut x = left;
    for (g, bars) in groups {
        let gx = x;
        for (label, val) in bars {
            let (ya, yb) = (y(val.max(0.0)), y(val.min(0.0)));
            let bx = x + (slot - bw) / 2.0;
            s.push_str(&format!(
                "<rect x=\"{bx:.1}\" y=\"{ya:.1}\" width=\"{bw:.1}\" height=\"{:.1}\" fill=\"{}\"/>\n\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-weight=\"bold\">{val:.digits$}</text>\n",
                (yb - ya).max(0.5),
                color_of(label),
                bx + bw / 2.0,
                ya - 6.0,
            ));
            // Label under the bar, wrapped at spaces to about the slot's width.
            let chars = ((slot / 6.5) as usize).max(6);
            for (k, l) in wrap(label, chars).iter().enumerate() {
                s.push_str(&format!(
                    "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"11\">{}</text>\n",
                    bx + bw / 2.0,
                    y0 + top + plot_h + 14.0 + 12.0 * k as f64,
                    esc(l)
                ));
            }
            x += slot;
        }
        if !g.is_empty() {
            s.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#444\" font-style=\"italic\">{}</text>\n",
                (gx + x) / 2.0,
                y0 + top + 12.0,
                esc(g)
            ));
        }
        x += slot * gap;
    }
}

/// docs/bench-b1-b3.svg: B1's cost above the floor per connection (µs, groups by chain) and
/// B3's cost per exec above plain (µs, groups by method); either panel is left out when its
/// case did not run.
pub fn b1_b3_chart(
    b1: &[(String, Vec<(String, f64)>)],
    b3: &[(String, Vec<(String, f64)>)],
) -> String {
    let panels = usize::from(!b1.is_empty()) + usize::from(!b3.is_empty());
    let (w, h) = (760.0, 330.0 * panels as f64);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" \
         font-family=\"DejaVu Sans, Arial, sans-serif\" font-size=\"12\">\n\
         <rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n"
    );
    let mut y0 = 0.0;
    if !b1.is_empty() {
        panel(
            &mut s,
            y0,
            "B1: cost per connection above the floor (paired difference, median)",
            "µs per connection",
            b1,
            1,
        );
        y0 += 330.0;
    }
    if !b3.is_empty() {
        panel(
            &mut s,
            y0,
            "B3: cost per exec above plain (median ratio × plain; paired differences)",
            "µs per exec",
            b3,
            1,
        );
    }
    s.push_str("</svg>\n");
    s
}
