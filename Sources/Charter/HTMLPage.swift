import Foundation

/// Pieces of one self-contained HTML page (no scripts, no network): escaped text, tables whose
/// number cells carry their exact value, and line charts as inline SVG.
enum HTML {
    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    /// A table cell for a number: shown with `digits` decimals, exact in data-value, findable by `id`.
    static func number(_ value: Double?, digits: Int = 3, id: String? = nil) -> String {
        let anchor = id.map { " id=\"\(escape($0))\"" } ?? ""
        guard let value, value.isFinite else { return "<td class=\"n\"\(anchor)>-</td>" }
        return "<td class=\"n\"\(anchor) data-value=\"\(value)\">\(String(format: "%.\(digits)f", value))</td>"
    }

    static func text(_ value: String) -> String { "<td>\(escape(value))</td>" }

    /// A table of already made cells (from `number` and `text`).
    static func table(_ header: [String], _ rows: [[String]]) -> String {
        "<table><tr>" + header.map { "<th>\(escape($0))</th>" }.joined() + "</tr>\n"
            + rows.map { "<tr>" + $0.joined() + "</tr>\n" }.joined() + "</table>\n"
    }

    static func page(title: String, body: String) -> String {
        """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><title>\(escape(title))</title>
        <style>
        body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; max-width: 1200px; }
        h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; border-bottom: 1px solid #ccc; }
        table { border-collapse: collapse; margin: 8px 0; } td, th { border: 1px solid #ddd; padding: 3px 8px; vertical-align: top; }
        th { background: #f4f4f4; text-align: left; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
        td.sample { max-width: 320px; white-space: pre-wrap; font-size: 12px; }
        .charts { display: flex; flex-wrap: wrap; gap: 12px; } .note { color: #666; }
        svg text { font: 11px system-ui, sans-serif; fill: #333; }
        </style></head><body>
        <h1>\(escape(title))</h1>
        \(body)
        </body></html>

        """
    }
}

/// A line chart of one or more series over a shared x axis, as inline SVG. Each polyline keeps
/// its points' exact values in data-x and data-y, so the page can be checked against its sources.
struct LineChart {
    struct Series { var name: String; var points: [(x: Double, y: Double)] }

    var title: String
    var xLabel: String
    var series: [Series]

    static let colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]

    func svg(width: Double = 380, height: Double = 220) -> String {
        let drawn = series.filter { !$0.points.isEmpty }
        let all = drawn.flatMap(\.points)
        guard !all.isEmpty else { return "" }
        let left = 56.0, right = 12.0, top = 24.0, bottom = 34.0 + 14 * Double(drawn.count)
        let plotW = width - left - right, plotH = height - top - bottom
        var (x0, x1) = (all.map(\.x).min()!, all.map(\.x).max()!)
        var (y0, y1) = (all.map(\.y).min()!, all.map(\.y).max()!)
        if x0 == x1 { x0 -= 1; x1 += 1 }
        if y0 == y1 { let pad = max(abs(y0) * 0.1, 0.05); y0 -= pad; y1 += pad }
        func px(_ x: Double) -> Double { left + (x - x0) / (x1 - x0) * plotW }
        func py(_ y: Double) -> Double { top + (y1 - y) / (y1 - y0) * plotH }
        func f(_ v: Double) -> String { String(format: "%.1f", v) }
        func label(_ v: Double) -> String { abs(v) >= 1000 || (abs(v) < 0.01 && v != 0) ? String(format: "%.2g", v) : String(format: "%.3g", v) }

        var out = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" role=\"img\">"
        out += "<title>\(HTML.escape(title))</title><rect width=\"100%\" height=\"100%\" fill=\"#fff\" stroke=\"#ddd\"/>"
        out += "<text x=\"\(f(left))\" y=\"15\" font-weight=\"bold\">\(HTML.escape(title))</text>"
        for k in 0...2 {
            let y = y0 + (y1 - y0) * Double(k) / 2
            out += "<line x1=\"\(f(left))\" x2=\"\(f(left + plotW))\" y1=\"\(f(py(y)))\" y2=\"\(f(py(y)))\" stroke=\"#eee\"/>"
            out += "<text x=\"\(f(left - 4))\" y=\"\(f(py(y) + 4))\" text-anchor=\"end\">\(label(y))</text>"
        }
        out += "<line x1=\"\(f(left))\" x2=\"\(f(left))\" y1=\"\(f(top))\" y2=\"\(f(top + plotH))\" stroke=\"#999\"/>"
        out += "<line x1=\"\(f(left))\" x2=\"\(f(left + plotW))\" y1=\"\(f(top + plotH))\" y2=\"\(f(top + plotH))\" stroke=\"#999\"/>"
        out += "<text x=\"\(f(left))\" y=\"\(f(top + plotH + 14))\">\(label(x0))</text>"
        out += "<text x=\"\(f(left + plotW))\" y=\"\(f(top + plotH + 14))\" text-anchor=\"end\">\(label(x1))</text>"
        out += "<text x=\"\(f(left + plotW / 2))\" y=\"\(f(top + plotH + 14))\" text-anchor=\"middle\">\(HTML.escape(xLabel))</text>"
        for (i, s) in drawn.enumerated() {
            let color = Self.colors[i % Self.colors.count]
            let points = s.points.map { "\(f(px($0.x))),\(f(py($0.y)))" }.joined(separator: " ")
            out += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"1.8\" points=\"\(points)\" data-series=\"\(HTML.escape(s.name))\""
                + " data-x=\"\(s.points.map { "\($0.x)" }.joined(separator: " "))\" data-y=\"\(s.points.map { "\($0.y)" }.joined(separator: " "))\"/>"
            if s.points.count <= 12 {
                out += s.points.map { "<circle cx=\"\(f(px($0.x)))\" cy=\"\(f(py($0.y)))\" r=\"2.5\" fill=\"\(color)\"/>" }.joined()
            }
            let ly = top + plotH + 30 + 14 * Double(i)
            out += "<line x1=\"\(f(left))\" x2=\"\(f(left + 16))\" y1=\"\(f(ly - 4))\" y2=\"\(f(ly - 4))\" stroke=\"\(color)\" stroke-width=\"2\"/>"
            out += "<text x=\"\(f(left + 22))\" y=\"\(f(ly))\">\(HTML.escape(s.name))</text>"
        }
        return out + "</svg>"
    }
}
