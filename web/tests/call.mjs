// Calls the caller page from Debian's Chromium with a WAV as the microphone:
// waits for the bot's answer to the caller, keeps a screenshot, and writes
// what the page heard (WAV) and its transcript (JSON on stdout).
// Usage: node call.mjs URL MIC.wav OUT_PREFIX
import fs from 'node:fs';
import { launch } from './browser.mjs';

const [url, mic, out] = process.argv.slice(2);
const browser = await launch(mic);
try {
  const page = await browser.newPage();
  page.on('console', (m) => console.error('page:', m.text()));
  await page.goto(url);
  await page.click('#call');
  await page.waitForFunction(() => window.attendant.state === 'connected', null, { timeout: 15000 });
  const connected = Date.now();
  // The caller's question shows up, then the bot's answer after it.
  await page.waitForFunction(() => {
    const l = window.attendant.lines;
    const i = l.findIndex((x) => x.who === 'caller');
    return i >= 0 && l.slice(i + 1).some((x) => x.who === 'bot');
  }, null, { timeout: 60000 });
  await page.waitForTimeout(5000); // the answer plays out
  await page.screenshot({ path: `${out}.png`, fullPage: true });
  const wav = await page.evaluate(() => window.attendant.heardWav());
  fs.writeFileSync(`${out}.wav`, Buffer.from(wav, 'base64'));
  await page.click('#hangup');
  await page.waitForTimeout(800);
  const st = await page.evaluate(() => ({
    callId: window.attendant.callId, lines: window.attendant.lines,
    state: window.attendant.state, error: window.attendant.error,
  }));
  st.connectedAfterMs = connected;
  console.log(JSON.stringify(st));
} finally {
  await browser.close();
}
