//! Battery model files for `lager battery NET model-create|model-export`:
//! one row per SOC percent, `soc,voc,esr`, SOC 0 to 100 in order, with an
//! optional header line. The box checks the values' shape again; this
//! catches a wrong file before anything is sent and names its line.

/// Rows in a model file: SOC 0, 1, …, 100.
const ROWS: usize = 101;

/// The VOC and ESR columns of a model file, or what is wrong with it.
pub fn parse(text: &str) -> Result<(Vec<f64>, Vec<f64>), String> {
    let mut voc = Vec::with_capacity(ROWS);
    let mut esr = Vec::with_capacity(ROWS);
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let numbers: Option<Vec<f64>> = fields.iter().map(|f| f.parse().ok()).collect();
        let Some(numbers) = numbers.filter(|n| n.iter().all(|v: &f64| v.is_finite())) else {
            if voc.is_empty() && index == 0 {
                continue; // the header
            }
            return Err(format!(
                "line {}: expected three numbers soc,voc,esr, found '{line}'",
                index + 1
            ));
        };
        let [soc, v, r] = numbers[..] else {
            return Err(format!(
                "line {}: expected three numbers soc,voc,esr, found {}",
                index + 1,
                numbers.len()
            ));
        };
        let expected = voc.len() as f64;
        if soc != expected {
            return Err(format!(
                "line {}: SOC {soc} where {expected} was expected (rows go 0, 1, …, 100)",
                index + 1
            ));
        }
        voc.push(v);
        esr.push(r);
    }
    if voc.len() != ROWS {
        return Err(format!(
            "{} rows; a model has {ROWS}, one per SOC percent 0 to 100",
            voc.len()
        ));
    }
    Ok((voc, esr))
}

/// A model file for the VOC and ESR lists of a slot.
pub fn render(voc: &[f64], esr: &[f64]) -> String {
    let mut text = String::from("soc,voc,esr\n");
    for (soc, (v, r)) in voc.iter().zip(esr).enumerate() {
        text.push_str(&format!("{soc},{v},{r}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> (Vec<f64>, Vec<f64>) {
        let voc = (0..ROWS).map(|i| 3.0 + 1.2 * i as f64 / 100.0).collect();
        let esr = (0..ROWS).map(|i| 0.3 - 0.2 * i as f64 / 100.0).collect();
        (voc, esr)
    }

    #[test]
    fn a_rendered_model_parses_back_to_the_same_values() {
        let (voc, esr) = model();
        assert_eq!(parse(&render(&voc, &esr)).unwrap(), (voc, esr));
    }

    #[test]
    fn wrong_files_name_the_line() {
        let (voc, esr) = model();
        let text = render(&voc, &esr);
        assert_eq!(
            parse(&text.replace("50,", "51,")).unwrap_err(),
            "line 52: SOC 51 where 50 was expected (rows go 0, 1, …, 100)"
        );
        let short: String = text.lines().take(50).map(|l| format!("{l}\n")).collect();
        assert_eq!(
            parse(&short).unwrap_err(),
            "49 rows; a model has 101, one per SOC percent 0 to 100"
        );
        assert!(parse(&text.replace("7,", "7,x,"))
            .unwrap_err()
            .starts_with("line 9: expected three numbers"));
        assert!(parse("soc,voc\n0,1\n").unwrap_err().contains("found 2"));
    }
}
