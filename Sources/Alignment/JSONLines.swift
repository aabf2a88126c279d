import Foundation

/// JSONL files: one JSON object per line; blank lines are skipped. Errors name the file and line.
public enum JSONLines {
    /// (line number, object) per non-blank line.
    public static func read(_ path: String) throws -> [(line: Int, object: [String: Any])] {
        guard let data = FileManager.default.contents(atPath: path) else { throw DataError("\(path): cannot read") }
        let name = (path as NSString).lastPathComponent
        var out: [(line: Int, object: [String: Any])] = []
        for (i, line) in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated() {
            if line.allSatisfy({ $0 == 32 || $0 == 9 || $0 == 13 }) { continue }
            guard let json = try? JSONSerialization.jsonObject(with: Data(line)) else { throw DataError("\(name) line \(i + 1): not valid JSON") }
            guard let object = json as? [String: Any] else { throw DataError("\(name) line \(i + 1): expected a JSON object") }
            out.append((i + 1, object))
        }
        return out
    }

    /// An error about one line of a file.
    public static func error(_ path: String, _ line: Int, _ problem: String) -> DataError {
        DataError("\((path as NSString).lastPathComponent) line \(line): \(problem)")
    }
}

/// One JSON line from an object, keys sorted: for outputs written at the rate results arrive
/// (Foundation's JSONSerialization takes about 100 us a line here). Takes what JSONSerialization
/// reads (NSNumber, NSNull, arrays, objects) and Swift's String, Bool, Int, Float, Double; a
/// float is written in the shortest form that reads back the same, a non-finite one as null.
public enum JSONLine {
    public static func encode(_ object: [String: Any]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(512)
        value(object, &out)
        return out
    }

    static func value(_ v: Any, _ out: inout [UInt8]) {
        // Swift's own numbers first, by exact type: a cast such as `as? Int` would also take an
        // NSNumber, a true among them, and the NSNumber path costs an allocation a number.
        switch ObjectIdentifier(type(of: v)) {
        case ObjectIdentifier(Int.self): return integer(v as! Int, &out)
        case ObjectIdentifier(Float.self): return float(v as! Float, &out)
        case ObjectIdentifier(Double.self): return float(v as! Double, &out)
        case ObjectIdentifier(Bool.self): return out += Array(((v as! Bool) ? "true" : "false").utf8)
        case ObjectIdentifier([Int].self): return list(v as! [Int], &out, integer)
        case ObjectIdentifier([Float].self): return list(v as! [Float], &out, float)
        default: break
        }
        switch v {
        case let s as String: string(s, &out)
        case let o as [String: Any]:
            out.append(UInt8(ascii: "{"))
            for (i, key) in o.keys.sorted().enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                string(key, &out)
                out.append(UInt8(ascii: ":"))
                value(o[key]!, &out)
            }
            out.append(UInt8(ascii: "}"))
        case let a as [Any]:
            out.append(UInt8(ascii: "["))
            for (i, x) in a.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                value(x, &out)
            }
            out.append(UInt8(ascii: "]"))
        case let n as NSNumber:
            // The type code says what the number is; `as? Bool` would take any 0 or 1.
            switch String(cString: n.objCType) {
            case "c", "B": out += Array((n.boolValue ? "true" : "false").utf8)
            case "f": float(n.floatValue, &out)
            case "d": float(n.doubleValue, &out)
            case "Q", "L", "I", "S", "C": out += Array(String(n.uint64Value).utf8)
            default: out += Array(String(n.int64Value).utf8)
            }
        default: out += Array("null".utf8) // NSNull, and nothing else JSON can hold
        }
    }

    static func list<T>(_ xs: [T], _ out: inout [UInt8], _ element: (T, inout [UInt8]) -> Void) {
        out.append(UInt8(ascii: "["))
        for (i, x) in xs.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            element(x, &out)
        }
        out.append(UInt8(ascii: "]"))
    }

    static func integer(_ x: Int, _ out: inout [UInt8]) {
        out += Array(String(x).utf8)
    }

    static func float<F: BinaryFloatingPoint & LosslessStringConvertible>(_ x: F, _ out: inout [UInt8]) {
        out += Array((x.isFinite ? x.description : "null").utf8)
    }

    static func string(_ s: String, _ out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "\""): out += [UInt8(ascii: "\\"), UInt8(ascii: "\"")]
            case UInt8(ascii: "\\"): out += [UInt8(ascii: "\\"), UInt8(ascii: "\\")]
            case UInt8(ascii: "\n"): out += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
            case UInt8(ascii: "\t"): out += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
            case UInt8(ascii: "\r"): out += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
            case 0..<0x20: out += Array(String(format: "\\u%04x", b).utf8)
            default: out.append(b)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}

/// Metrics files name their keys in snake_case, as Hugging Face's trainers log them; the Swift
/// names they come from are camelCase.
public enum SnakeCase {
    /// `approxKL` -> `approx_kl`, `itemsPerSecond` -> `items_per_second`; snake_case stays as it is.
    public static func key(_ name: String) -> String {
        let chars = Array(name)
        var out = ""
        for (i, c) in chars.enumerated() {
            if c.isUppercase && i > 0 {
                let before = chars[i - 1], after = i + 1 < chars.count ? chars[i + 1] : nil
                if before.isLowercase || before.isNumber || (before.isUppercase && after?.isLowercase == true) { out.append("_") }
            }
            out += c.lowercased()
        }
        return out
    }

    /// The object with every key (not nested ones) in snake_case.
    public static func keys(_ object: [String: Any]) -> [String: Any] {
        Dictionary(object.map { (key($0.key), $0.value) }, uniquingKeysWith: { a, _ in a })
    }
}
