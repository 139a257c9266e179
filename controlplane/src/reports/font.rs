//! Helvetica, one of the PDF standard 14 fonts, in WinAnsiEncoding: every reader has it, so nothing is embedded,
//! and WinAnsi covers Portuguese (`ç ã é õ ú` and the rest of Latin-1, plus `€ – — “ ” •`).
//!
//! [`encode`] turns text into WinAnsi bytes (a character outside it becomes `?`), and [`width`] measures those
//! bytes with Helvetica's metrics (Adobe's AFM, in thousandths of the font size) so that the PDF can fit text
//! into columns. Bold text is measured with the regular widths plus 10 %, which never underestimates
//! Helvetica-Bold.

/// Advance widths of Helvetica for WinAnsi bytes 32 to 255, in 1/1000 of the font size.
const WIDTHS: [u16; 224] = [
    // 32..=63: space ! " # $ % & ' ( ) * + , - . / 0-9 : ; < = > ?
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556,
    556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556, //
    // 64..=95: @ A-Z [ \ ] ^ _
    1015, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833, 722, 778, 667, 778, 722,
    667, 611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469, 556, //
    // 96..=127: ` a-z { | } ~ (127 unused)
    333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500, 222, 833, 556, 556, 556, 556, 333,
    500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584, 278, //
    // 128..=159: € . ‚ ƒ „ … † ‡ ˆ ‰ Š ‹ Œ . Ž . . ‘ ’ “ ” • – — ˜ ™ š › œ . ž Ÿ
    556, 278, 222, 556, 333, 1000, 556, 556, 333, 1000, 667, 333, 1000, 278, 611, 278, 278, 222,
    222, 333, 333, 350, 556, 1000, 333, 1000, 500, 333, 944, 278, 500, 667, //
    // 160..=191: nbsp ¡ ¢ £ ¤ ¥ ¦ § ¨ © ª « ¬ shy ® ¯ ° ± ² ³ ´ µ ¶ · ¸ ¹ º » ¼ ½ ¾ ¿
    278, 333, 556, 556, 556, 556, 260, 556, 333, 737, 370, 556, 584, 333, 737, 333, 400, 584, 333,
    333, 333, 556, 537, 278, 333, 333, 365, 556, 834, 834, 834, 611, //
    // 192..=223: À Á Â Ã Ä Å Æ Ç È É Ê Ë Ì Í Î Ï Ð Ñ Ò Ó Ô Õ Ö × Ø Ù Ú Û Ü Ý Þ ß
    667, 667, 667, 667, 667, 667, 1000, 722, 667, 667, 667, 667, 278, 278, 278, 278, 722, 722, 778,
    778, 778, 778, 778, 584, 778, 722, 722, 722, 722, 667, 667, 611, //
    // 224..=255: à á â ã ä å æ ç è é ê ë ì í î ï ð ñ ò ó ô õ ö ÷ ø ù ú û ü ý þ ÿ
    556, 556, 556, 556, 556, 556, 889, 500, 556, 556, 556, 556, 278, 278, 278, 278, 556, 556, 556,
    556, 556, 556, 556, 584, 611, 556, 556, 556, 556, 500, 556, 500,
];

/// WinAnsi bytes 128 to 159 and the characters they stand for (the rest of the range is unused).
const WIN_ANSI_HIGH: [(char, u8); 27] = [
    ('€', 128),
    ('‚', 130),
    ('ƒ', 131),
    ('„', 132),
    ('…', 133),
    ('†', 134),
    ('‡', 135),
    ('ˆ', 136),
    ('‰', 137),
    ('Š', 138),
    ('‹', 139),
    ('Œ', 140),
    ('Ž', 142),
    ('‘', 145),
    ('’', 146),
    ('“', 147),
    ('”', 148),
    ('•', 149),
    ('–', 150),
    ('—', 151),
    ('˜', 152),
    ('™', 153),
    ('š', 154),
    ('›', 155),
    ('œ', 156),
    ('ž', 158),
    ('Ÿ', 159),
];

/// The WinAnsi byte of `c`, or `?` when WinAnsi has no such character. Control characters become spaces.
pub fn encode_char(c: char) -> u8 {
    let u = c as u32;
    match u {
        0..=31 | 127 => b' ',
        32..=126 | 160..=255 => u as u8,
        _ => WIN_ANSI_HIGH
            .iter()
            .find(|(ch, _)| *ch == c)
            .map_or(b'?', |(_, b)| *b),
    }
}

/// `text` in WinAnsi.
pub fn encode(text: &str) -> Vec<u8> {
    text.chars().map(encode_char).collect()
}

/// Width of WinAnsi `bytes` in Helvetica at `size` points (bold: 10 % more).
pub fn width(bytes: &[u8], size: f32, bold: bool) -> f32 {
    let units: u32 = bytes
        .iter()
        .map(|b| u32::from(WIDTHS[usize::from(b.saturating_sub(32))]))
        .sum();
    let w = units as f32 * size / 1000.0;
    if bold { w * 1.1 } else { w }
}

/// `bytes` cut to fit `max` points, with `...` when cut.
pub fn fit(bytes: &[u8], size: f32, bold: bool, max: f32) -> Vec<u8> {
    if width(bytes, size, bold) <= max {
        return bytes.to_vec();
    }
    let ellipsis = width(b"...", size, bold);
    let mut out = Vec::with_capacity(bytes.len());
    let mut used = 0.0;
    for &b in bytes {
        let w = width(&[b], size, bold);
        if used + w + ellipsis > max {
            break;
        }
        used += w;
        out.push(b);
    }
    out.extend_from_slice(b"...");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portuguese_is_in_win_ansi() {
        assert_eq!(
            encode("Conexão Ótima ç"),
            b"Conex\xe3o \xd3tima \xe7".to_vec()
        );
        assert_eq!(
            encode("€ – “x”"),
            vec![128, b' ', 150, b' ', 147, b'x', 148]
        );
        assert_eq!(encode("日本\n"), b"?? ".to_vec());
    }

    #[test]
    fn widths_are_helvetica() {
        // "Hello" = 722 + 556 + 222 + 222 + 556 = 2278 units.
        assert!((width(b"Hello", 10.0, false) - 22.78).abs() < 1e-3);
        assert!(width(b"Hello", 10.0, true) > width(b"Hello", 10.0, false));
        let cut = fit(b"Provedor de Internet", 10.0, false, 50.0);
        assert!(cut.ends_with(b"..."));
        assert!(width(&cut, 10.0, false) <= 50.0);
        assert_eq!(fit(b"ok", 10.0, false, 50.0), b"ok".to_vec());
    }
}
