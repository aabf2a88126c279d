/// Text from a file, made safe to put in an error line: quoted, control and non-ASCII bytes
/// escaped, and cut after `limit` characters, so a corrupted name never prints kilobytes of binary.
public func shown(_ text: some StringProtocol, limit: Int = 80) -> String {
    var out = "\"", count = 0
    for u in text.unicodeScalars {
        if count == limit { return out + "\"... (\(text.utf8.count) bytes)" }
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case _ where u.value < 0x20 || u.value == 0x7f: out += "\\x" + hex(u.value, 2)
        case _ where u.value > 0x7e && !u.properties.isAlphabetic: out += "\\u{" + hex(u.value, 1) + "}"
        default: out.unicodeScalars.append(u)
        }
        count += 1
    }
    return out + "\""
}

private func hex(_ v: UInt32, _ width: Int) -> String {
    let s = String(v, radix: 16)
    return String(repeating: "0", count: max(0, width - s.count)) + s
}
