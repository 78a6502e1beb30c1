//! The few DER encodings the token writes (attribute values it derives).

/// A DER TLV (lengths below 64 KiB).
pub(crate) fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else if n < 0x100 {
        out.extend_from_slice(&[0x81, n as u8]);
    } else {
        out.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]);
    }
    out.extend_from_slice(content);
    out
}

/// A DER INTEGER from a big-endian magnitude.
pub(crate) fn der_integer(magnitude: &[u8], negative: bool) -> Vec<u8> {
    let mut content: Vec<u8> = magnitude.iter().copied().skip_while(|b| *b == 0).collect();
    if content.is_empty() {
        content.push(0);
    }
    if negative {
        // Two's complement of the magnitude, with room for the sign bit.
        let mut v = vec![0u8];
        v.extend_from_slice(&content);
        let mut carry = true;
        for b in v.iter_mut().rev() {
            let (n, c) = (!*b).overflowing_add(carry as u8);
            *b = n;
            carry = c;
        }
        while v.len() > 1 && v[0] == 0xFF && v[1] & 0x80 != 0 {
            v.remove(0);
        }
        content = v;
    } else if content[0] & 0x80 != 0 {
        content.insert(0, 0);
    }
    der(0x02, &content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths() {
        assert_eq!(der(0x04, &[0; 3]), vec![0x04, 3, 0, 0, 0]);
        assert_eq!(&der(0x04, &[0; 200])[..3], &[0x04, 0x81, 200]);
        assert_eq!(&der(0x04, &[0; 300])[..4], &[0x04, 0x82, 1, 44]);
    }

    #[test]
    fn der_integers() {
        assert_eq!(der_integer(&[0x01], false), vec![2, 1, 1]);
        assert_eq!(der_integer(&[0x80], false), vec![2, 2, 0, 0x80]);
        assert_eq!(der_integer(&[0, 0, 5], false), vec![2, 1, 5]);
        assert_eq!(der_integer(&[], false), vec![2, 1, 0]);
        assert_eq!(der_integer(&[1], true), vec![2, 1, 0xFF]);
        assert_eq!(der_integer(&[0x80], true), vec![2, 1, 0x80]);
        assert_eq!(der_integer(&[0x81], true), vec![2, 2, 0xFF, 0x7F]);
    }
}
