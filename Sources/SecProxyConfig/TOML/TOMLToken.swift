/// Bare value tokens: numbers, booleans and date-times, classified from their text.
enum TOMLToken {
    private typealias C = TOMLCharacter

    enum Result {
        case value(TOMLValue)
        case invalid(String)
    }

    static let invalidValue =
        "invalid value: expected a string, number, boolean, array or inline table; strings need quotes"

    static func classify(_ token: ArraySlice<Unicode.Scalar>) -> Result {
        let v = token.map(\.value)
        var text = String()
        text.unicodeScalars.append(contentsOf: token)
        switch text {
        case "true": return .value(.boolean(true))
        case "false": return .value(.boolean(false))
        case "inf", "+inf": return .value(.float(.infinity))
        case "-inf": return .value(.float(-.infinity))
        case "nan", "+nan", "-nan": return .value(.float(.nan))
        default: break
        }
        if v.count >= 5 && v[0..<4].allSatisfy(C.isDigit) && v[4] == C.minus {
            return isValidDateTime(v) ? .value(.datetime(text)) : .invalid("invalid date-time '\(text)'")
        }
        if v.count >= 3 && C.isDigit(v[0]) && C.isDigit(v[1]) && v[2] == C.colon {
            return isValidDateTime(v) ? .value(.datetime(text)) : .invalid("invalid time '\(text)'")
        }
        if v.count >= 2 && v[0] == 0x30 && (v[1] == 0x78 || v[1] == 0x6F || v[1] == 0x62) {
            return radixInteger(v, text: text)
        }
        return decimal(v, text: text)
    }

    /// Digits with single underscores between them; at least one digit.
    static func scanDigits(_ v: [UInt32], _ k: inout Int, _ isDigit: (UInt32) -> Bool) -> Bool {
        guard k < v.count, isDigit(v[k]) else { return false }
        k += 1
        while k < v.count {
            if isDigit(v[k]) {
                k += 1
            } else if v[k] == C.underscore && k + 1 < v.count && isDigit(v[k + 1]) {
                k += 2
            } else {
                break
            }
        }
        return true
    }

    static func outOfRange(_ text: String) -> Result {
        .invalid("integer '\(text)' is out of range for a 64-bit integer")
    }

    static func radixInteger(_ v: [UInt32], text: String) -> Result {
        let radix: Int64
        let isDigit: (UInt32) -> Bool
        switch v[1] {
        case 0x78: radix = 16; isDigit = C.isHex
        case 0x6F: radix = 8; isDigit = C.isOctal
        default: radix = 2; isDigit = C.isBinary
        }
        var k = 2
        guard scanDigits(v, &k, isDigit), k == v.count else { return .invalid(invalidValue) }
        var value: Int64 = 0
        for c in v[2...] where c != C.underscore {
            let (m, o1) = value.multipliedReportingOverflow(by: radix)
            let (a, o2) = m.addingReportingOverflow(Int64(C.hexValue(c)))
            if o1 || o2 { return outOfRange(text) }
            value = a
        }
        return .value(.integer(value))
    }

    static func decimal(_ v: [UInt32], text: String) -> Result {
        var k = 0
        if k < v.count && (v[k] == C.plus || v[k] == C.minus) { k += 1 }
        let intStart = k
        guard scanDigits(v, &k, C.isDigit) else { return .invalid(invalidValue) }
        let leadingZero = v[intStart] == 0x30 && k - intStart > 1
        var isFloat = false
        if k < v.count && v[k] == C.dot {
            k += 1
            guard scanDigits(v, &k, C.isDigit) else { return .invalid(invalidValue) }
            isFloat = true
        }
        if k < v.count && (v[k] == 0x65 || v[k] == 0x45) {
            k += 1
            if k < v.count && (v[k] == C.plus || v[k] == C.minus) { k += 1 }
            guard scanDigits(v, &k, C.isDigit) else { return .invalid(invalidValue) }
            isFloat = true
        }
        guard k == v.count else { return .invalid(invalidValue) }
        if leadingZero {
            return .invalid("invalid number '\(text)': leading zeros are not allowed")
        }
        let clean = String(text.unicodeScalars.filter { $0 != "_" })
        if isFloat {
            guard let d = Double(clean), d.isFinite else {
                return .invalid("float '\(text)' is out of range")
            }
            return .value(.float(d))
        }
        guard let i = Int64(clean) else { return outOfRange(text) }
        return .value(.integer(i))
    }

    static func isValidDateTime(_ v: [UInt32]) -> Bool {
        func digits(_ from: Int, _ count: Int) -> Int? {
            guard from + count <= v.count else { return nil }
            var n = 0
            for k in from..<(from + count) {
                guard C.isDigit(v[k]) else { return nil }
                n = n * 10 + Int(v[k] - 0x30)
            }
            return n
        }
        var k = 0
        var hasDate = false
        if v.count >= 5 && v[4] == C.minus {
            guard let year = digits(0, 4), v.count >= 10, v[4] == C.minus, let month = digits(5, 2),
                v[7] == C.minus, let day = digits(8, 2)
            else { return false }
            guard (1...12).contains(month) else { return false }
            let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
            let days = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]
            guard (1...days).contains(day) else { return false }
            k = 10
            hasDate = true
            if k == v.count { return true }
            guard v[k] == 0x54 || v[k] == 0x74 || v[k] == C.space else { return false }
            k += 1
        }
        guard let hour = digits(k, 2), k + 2 < v.count, v[k + 2] == C.colon, let minute = digits(k + 3, 2),
            k + 5 < v.count, v[k + 5] == C.colon, let second = digits(k + 6, 2)
        else { return false }
        guard hour <= 23, minute <= 59, second <= 60 else { return false }
        k += 8
        if k < v.count && v[k] == C.dot {
            k += 1
            guard k < v.count, C.isDigit(v[k]) else { return false }
            while k < v.count && C.isDigit(v[k]) { k += 1 }
        }
        if k == v.count { return true }
        guard hasDate else { return false }
        if v[k] == 0x5A || v[k] == 0x7A { return k + 1 == v.count }
        guard v[k] == C.plus || v[k] == C.minus, k + 6 == v.count, let oh = digits(k + 1, 2),
            v[k + 3] == C.colon, let om = digits(k + 4, 2)
        else { return false }
        return oh <= 23 && om <= 59
    }
}
