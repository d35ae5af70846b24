/** Reading `barman metrics` output in tests through an independent Prometheus text parser. */
import parsePrometheusTextFormat from 'parse-prometheus-text-format';

/** `name{k="v",...}` → value, labels sorted, from the parsed exposition. */
export function metricValues(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const fam of parsePrometheusTextFormat(text)) {
    for (const m of fam.metrics) {
      const labels = Object.entries(m.labels ?? {})
        .sort(([a], [b]) => (a < b ? -1 : 1))
        .map(([k, v]) => `${k}="${v}"`)
        .join(',');
      out.set(`${fam.name}{${labels}}`, Number(m.value));
    }
  }
  return out;
}
