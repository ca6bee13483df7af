//! docs/bench-b2.svg: a hand-written bar chart of B2 (no dependencies).

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
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
        // Label under the bar, wrapped at the first ':' or space near the middle.
        let words: Vec<&str> = label.split_whitespace().collect();
        let mut lines = vec![String::new()];
        for wd in words {
            let cur = lines.last().map(|l| l.len()).unwrap_or(0);
            if cur > 0 && cur + wd.len() > 16 {
                lines.push(String::new());
            }
            if let Some(l) = lines.last_mut() {
                if !l.is_empty() {
                    l.push(' ');
                }
                l.push_str(wd);
            }
        }
        for (k, l) in lines.iter().enumerate() {
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
