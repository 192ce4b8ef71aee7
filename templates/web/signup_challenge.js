// The signup form's proof of work (SIGNUP_CHALLENGE; service/subscribers/challenge.py).
// Find a counter such that SHA-256(challenge + counter) starts with `bits` zero bits,
// then submit.  Nothing leaves the page but the answer: no third party, no cookie.
//
// Two hashers: Web Crypto (crypto.subtle.digest, in batches) and a plain SHA-256 that
// hashes the challenge's first 64 bytes once and then only the last block per try.
// bench/bench_signup_challenge.py measures both in Chromium: the plain one makes 8-10×
// more tries a second (a promise per digest costs more than the digest), so the form
// uses it; it also works where crypto.subtle is missing (a page served over plain http
// from another host than localhost is not a secure context).
(function () {
  "use strict";

  var K = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2
  ];
  var IV = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
  var CHUNK = 1024; // tries between two looks at the clock
  var SLICE = 50; // ms of work before the page gets a turn (it stays responsive)

  function compress(H, W, bytes, off) {
    var t, x, y;
    for (t = 0; t < 16; t++) {
      x = off + 4 * t;
      W[t] = (bytes[x] << 24) | (bytes[x + 1] << 16) | (bytes[x + 2] << 8) | bytes[x + 3];
    }
    for (t = 16; t < 64; t++) {
      x = W[t - 15]; y = W[t - 2];
      W[t] = (W[t - 16] + (((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3)) + W[t - 7] +
              (((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10))) | 0;
    }
    var a = H[0], b = H[1], c = H[2], d = H[3], e = H[4], f = H[5], g = H[6], h = H[7], t1, t2;
    for (t = 0; t < 64; t++) {
      t1 = (h + (((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7))) +
            ((e & f) ^ (~e & g)) + K[t] + W[t]) | 0;
      t2 = ((((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10))) +
            ((a & b) ^ (a & c) ^ (b & c))) | 0;
      h = g; g = f; f = e; e = (d + t1) | 0; d = c; c = b; b = a; a = (t1 + t2) | 0;
    }
    H[0] = (H[0] + a) | 0; H[1] = (H[1] + b) | 0; H[2] = (H[2] + c) | 0; H[3] = (H[3] + d) | 0;
    H[4] = (H[4] + e) | 0; H[5] = (H[5] + f) | 0; H[6] = (H[6] + g) | 0; H[7] = (H[7] + h) | 0;
  }

  function zeroBits(words) { // leading zero bits of a digest given as 32-bit words
    var n = 0;
    for (var i = 0; i < words.length; i++) {
      var z = Math.clz32(words[i]);
      n += z;
      if (z < 32) break;
    }
    return n;
  }

  function ascii(text) {
    var out = new Uint8Array(text.length);
    for (var i = 0; i < text.length; i++) out[i] = text.charCodeAt(i) & 0x7f;
    return out;
  }

  function pause() { return new Promise(function (resolve) { setTimeout(resolve, 0); }); }

  // The plain hasher: the challenge's whole 64-byte blocks once; per try only the last
  // block(s), with the counter's decimal digits counted up in place in the buffer.
  async function solvePlain(challenge, bits) {
    var prefix = ascii(challenge), whole = prefix.length - (prefix.length % 64);
    var mid = new Int32Array(IV), W = new Int32Array(64), H = new Int32Array(8);
    for (var off = 0; off < whole; off += 64) compress(mid, W, prefix, off);
    var rest = prefix.length - whole, buf = new Uint8Array(192), since = performance.now();
    buf.set(prefix.subarray(whole));
    var width = 0, blocks = 0, last = rest; // digits now; blocks a try; index of the last digit

    function layout(digits) { // the counter's digits and the padding for this width
      width = digits.length; last = rest + width - 1;
      var len = rest + width, end;
      blocks = Math.ceil((len + 9) / 64); end = blocks * 64;
      buf.fill(0, rest, end);
      for (var i = 0; i < width; i++) buf[rest + i] = digits.charCodeAt(i);
      var total = (whole + len) * 8;
      buf[len] = 0x80;
      buf[end - 4] = total >>> 24; buf[end - 3] = total >>> 16; buf[end - 2] = total >>> 8; buf[end - 1] = total;
    }

    layout("0");
    for (var n = 0; ; n++) {
      H.set(mid);
      compress(H, W, buf, 0);
      if (blocks > 1) compress(H, W, buf, 64);
      if (zeroBits(H) >= bits) return String(n);
      // n + 1, in place: 0x39 is "9"
      var i = last;
      while (i >= rest && buf[i] === 0x39) { buf[i] = 0x30; i--; }
      if (i < rest) layout(String(n + 1)); else buf[i]++;
      // Look at the clock every CHUNK tries; hand the page back after SLICE ms of work
      // (setTimeout's own delay, clamped to 4 ms when nested, would otherwise cost more
      // than the tries).
      if (n % CHUNK === CHUNK - 1 && performance.now() - since > SLICE) {
        await pause();
        since = performance.now();
      }
    }
  }

  // Web Crypto, a batch of digests at a time (each call is a promise: one at a time is slow).
  async function solveSubtle(challenge, bits) {
    var prefix = ascii(challenge), batch = 512;
    for (var start = 0; ; start += batch) {
      var jobs = [];
      for (var n = start; n < start + batch; n++) {
        var digits = String(n), data = new Uint8Array(prefix.length + digits.length);
        data.set(prefix);
        for (var i = 0; i < digits.length; i++) data[prefix.length + i] = digits.charCodeAt(i);
        jobs.push(crypto.subtle.digest("SHA-256", data));
      }
      var found = await Promise.all(jobs);
      for (var j = 0; j < batch; j++) {
        var view = new DataView(found[j]);
        if (zeroBits([view.getUint32(0) | 0, view.getUint32(4) | 0]) >= bits) return String(start + j);
      }
    }
  }

  function solve(challenge, bits) {
    return solvePlain(challenge, bits);
  }

  window.NashraChallenge = { solve: solve, solvePlain: solvePlain, solveSubtle: solveSubtle };

  // ---------------------------------------------------------------- the form
  var field = document.querySelector("input[name=challenge]");
  if (!field) return;
  var form = field.form, answer = form.querySelector("input[name=solution]");
  var status = document.getElementById("challenge-status");
  var bits = parseInt(field.getAttribute("data-bits"), 10);
  var bornAt = Date.now(), life = parseInt(field.getAttribute("data-expires-in"), 10) * 1000;
  var working = null, sending = false;

  function start() {
    if (!working) {
      working = solve(field.value, bits).then(function (found) { answer.value = found; return found; });
    }
    return working;
  }

  async function fresh() { // a page left open past the challenge's life gets a new one
    var reply = await fetch("/api/challenge", { credentials: "omit", cache: "no-store" });
    var body = await reply.json();
    field.value = body.challenge; bits = body.bits; bornAt = Date.now(); life = body.expires_in * 1000;
    answer.value = ""; working = null;
  }

  form.addEventListener("submit", async function (event) {
    if (answer.value && Date.now() - bornAt < life - 60000) return; // solved and still good: send
    event.preventDefault();
    if (sending) return;
    sending = true;
    status.textContent = "جارٍ التحقق…";
    try {
      if (Date.now() - bornAt >= life - 60000) await fresh();
      await start();
      status.textContent = "تمّ التحقق، جارٍ الإرسال…";
      form.submit();
    } catch (err) {
      status.textContent = "تعذّر التحقق. أعد تحميل الصفحة ثم حاول مرة أخرى.";
      sending = false;
    }
  });
  // Start while the reader types: by the time they press the button it is usually done.
  start();
})();
