//! AES-CCM helpers for BTHome v2 and MiBeacon v2-v5 (4-byte tags).

use aes::Aes128;
use aes::cipher::{BlockEncrypt, generic_array::GenericArray};
use ccm::aead::{AeadInPlace, KeyInit};
use ccm::consts::{U4, U12, U13};

use super::DecodeError;

type Ccm12 = ccm::Ccm<Aes128, U4, U12>;
type Ccm13 = ccm::Ccm<Aes128, U4, U13>;

/// Decrypts and authenticates `ct` (without its tag). Nonce must be 12 or 13 bytes.
pub(crate) fn ccm_decrypt(
    key: &[u8],
    nonce: &[u8],
    aad: &[u8],
    ct: &[u8],
    tag: &[u8],
) -> Result<Vec<u8>, DecodeError> {
    if key.len() != 16 {
        return Err(DecodeError::BadKeyLength(key.len()));
    }
    if tag.len() != 4 {
        return Err(DecodeError::Decrypt);
    }
    let mut buf = ct.to_vec();
    let tag = GenericArray::from_slice(tag);
    let ok = match nonce.len() {
        12 => Ccm12::new_from_slice(key)
            .map_err(|_| DecodeError::BadKeyLength(key.len()))?
            .decrypt_in_place_detached(GenericArray::from_slice(nonce), aad, &mut buf, tag)
            .is_ok(),
        13 => Ccm13::new_from_slice(key)
            .map_err(|_| DecodeError::BadKeyLength(key.len()))?
            .decrypt_in_place_detached(GenericArray::from_slice(nonce), aad, &mut buf, tag)
            .is_ok(),
        _ => false,
    };
    if ok {
        Ok(buf)
    } else {
        Err(DecodeError::Decrypt)
    }
}

/// CCM's counter-mode half only (13-byte nonce, so a 2-byte counter starting at 1).
/// MiBeacon v2/v3 ("legacy") adverts carry no usable tag, so a wrong key cannot be
/// detected here; the object parser rejects the garbage instead.
pub(crate) fn ccm_ctr_only(key: &[u8; 16], nonce: &[u8; 13], ct: &[u8]) -> Vec<u8> {
    let cipher = Aes128::new(GenericArray::from_slice(key));
    let mut out = Vec::with_capacity(ct.len());
    for (i, chunk) in ct.chunks(16).enumerate() {
        let ctr = (i + 1) as u16;
        let mut block = [0u8; 16];
        block[0] = 0x01; // flags: L' = L - 1 = 1
        block[1..14].copy_from_slice(nonce);
        block[14..16].copy_from_slice(&ctr.to_be_bytes());
        let mut b = GenericArray::from(block);
        cipher.encrypt_block(&mut b);
        out.extend(chunk.iter().zip(b.iter()).map(|(c, k)| c ^ k));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctr_only_matches_ccm_ciphertext() {
        let key = [7u8; 16];
        let nonce = [3u8; 13];
        let plain = b"0123456789abcdefXYZ".to_vec();
        let mut buf = plain.clone();
        let c = Ccm13::new_from_slice(&key).unwrap();
        let tag = c
            .encrypt_in_place_detached(GenericArray::from_slice(&nonce), b"\x11", &mut buf)
            .unwrap();
        assert_eq!(ccm_ctr_only(&key, &nonce, &buf), plain);
        assert_eq!(
            ccm_decrypt(&key, &nonce, b"\x11", &buf, &tag).unwrap(),
            plain
        );
        assert_eq!(
            ccm_decrypt(&key, &nonce, b"\x12", &buf, &tag),
            Err(DecodeError::Decrypt)
        );
        assert_eq!(
            ccm_decrypt(&key[..5], &nonce, b"", &buf, &tag),
            Err(DecodeError::BadKeyLength(5))
        );
        assert_eq!(
            ccm_decrypt(&key, &nonce[..7], b"", &buf, &tag),
            Err(DecodeError::Decrypt)
        );
    }
}
