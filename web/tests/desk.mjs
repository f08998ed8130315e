// An agent at the desk in Debian's Chromium, a WAV as their microphone:
// signs in, waits for a caller in the queue, keeps a screenshot of the queue
// with the caller's context card, takes the call, talks until the caller
// hangs up, and writes what the agent heard (WAV) and the page's state
// (JSON on stdout).
// Usage: node desk.mjs BASE_URL USER PASSWORD MIC.wav OUT_PREFIX
import fs from 'node:fs';
import { launch } from './browser.mjs';

const [base, user, password, mic, out] = process.argv.slice(2);
const browser = await launch(mic);
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on('console', (m) => console.error('page:', m.text()));
  await page.goto(`${base}/desk`);
  await page.fill('#user', user);
  await page.fill('#password', password);
  await page.click('#login button[type=submit]');
  await page.waitForFunction(() => window.desk.state === 'ready', null, { timeout: 15000 });
  await page.waitForSelector('[data-take]', { timeout: 60000 });
  // The context card loads (the customer's name replaces "Unknown caller").
  await page.waitForFunction(() => {
    const q = document.querySelector('#queue').textContent;
    return q.includes('Take call') && !q.includes('Unknown caller');
  }, null, { timeout: 15000 }).catch(() => {});
  await page.screenshot({ path: `${out}-queue.png`, fullPage: true });
  const card = await page.textContent('#queue');
  const clicked = Date.now();
  await page.click('[data-take]');
  await page.waitForFunction(() => window.desk.state === 'talking', null, { timeout: 15000 });
  const talking = Date.now();
  await page.waitForTimeout(3000);
  await page.screenshot({ path: `${out}-call.png`, fullPage: true });
  // The caller hangs up; the desk's call ends with theirs.
  await page.waitForFunction(() => window.desk.state === 'ready', null, { timeout: 90000 });
  const wav = await page.evaluate(() => (window.desk.heardWav ? window.desk.heardWav() : ''));
  fs.writeFileSync(`${out}.wav`, Buffer.from(wav, 'base64'));
  const st = await page.evaluate(() => ({ callId: window.desk.callId, me: window.desk.me, error: window.desk.error }));
  st.card = card;
  st.takeToTalkingMs = talking - clicked;
  console.log(JSON.stringify(st));
} finally {
  await browser.close();
}
