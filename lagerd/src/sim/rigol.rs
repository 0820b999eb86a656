//! A simulated Rigol DP832 (instruments.md §6.3): three channels (30 V/3 A,
//! 30 V/3 A, 5 V/3 A) addressed by `CH<n>` arguments, with per-channel
//! setpoints, outputs, OVP/OCP and a load model. It plugs into the same
//! socket, fault and control machinery as the Keithley (`sim/mod.rs`).

use std::collections::VecDeque;

use super::{canonical_header, format_number, Model};

#[derive(Clone)]
struct Channel {
    max_volts: f64,
    max_amps: f64,
    volts: f64,
    amps: f64,
    output: bool,
    ovp: f64,
    ocp: f64,
    ovp_on: bool,
    ocp_on: bool,
    ovp_tripped: bool,
    ocp_tripped: bool,
    load: f64,
}

impl Channel {
    fn new(max_volts: f64, max_amps: f64) -> Channel {
        Channel {
            max_volts,
            max_amps,
            volts: 0.0,
            amps: max_amps,
            output: false,
            ovp: max_volts + 1.0,
            ocp: max_amps + 0.2,
            ovp_on: false,
            ocp_on: false,
            ovp_tripped: false,
            ocp_tripped: false,
            load: 0.0,
        }
    }

    fn amps_out(&self) -> f64 {
        if self.output {
            self.load.min(self.amps)
        } else {
            0.0
        }
    }

    fn volts_out(&self) -> f64 {
        match (self.output, self.load > self.amps && self.load > 0.0) {
            (false, _) => 0.0,
            (true, true) => self.volts * self.amps / self.load,
            (true, false) => self.volts,
        }
    }

    /// Trips a protection that is on and exceeded, as the supply does.
    fn protect(&mut self) {
        if self.output && self.ocp_on && self.amps_out() > self.ocp {
            self.ocp_tripped = true;
            self.output = false;
        }
        if self.output && self.ovp_on && self.volts_out() > self.ovp {
            self.ovp_tripped = true;
            self.output = false;
        }
    }
}

pub struct RigolDp832 {
    channels: [Channel; 3],
    selected: usize,
    errors: VecDeque<(i32, &'static str)>,
}

impl Default for RigolDp832 {
    fn default() -> RigolDp832 {
        RigolDp832::new()
    }
}

impl RigolDp832 {
    pub fn new() -> RigolDp832 {
        RigolDp832 {
            channels: [
                Channel::new(30.0, 3.0),
                Channel::new(30.0, 3.0),
                Channel::new(5.0, 3.0),
            ],
            selected: 0,
            errors: VecDeque::new(),
        }
    }

    fn error(&mut self, code: i32, message: &'static str) {
        if self.errors.len() < 32 {
            self.errors.push_back((code, message));
        }
    }

    /// `CH2` → index 1; the selected channel when absent.
    fn channel(&mut self, token: Option<&str>) -> Option<usize> {
        let Some(token) = token else {
            return Some(self.selected);
        };
        let index = token
            .trim()
            .to_ascii_uppercase()
            .strip_prefix("CH")?
            .parse::<usize>()
            .ok()?;
        (1..=3).contains(&index).then(|| index - 1)
    }
}

impl Model for RigolDp832 {
    fn set_load(&mut self, amps: f64) {
        for channel in &mut self.channels {
            channel.load = amps;
        }
    }

    fn execute(&mut self, line: &str) -> Option<String> {
        for channel in &mut self.channels {
            channel.protect();
        }
        let line = line.trim();
        let (header, argument) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let query = header.ends_with('?');
        let header = canonical_header(header.trim_end_matches('?'));
        let args: Vec<&str> = argument
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .collect();
        // Most commands name the channel first (`CH1,...`).
        let named = args
            .first()
            .filter(|a| a.to_ascii_uppercase().starts_with("CH"))
            .copied();
        let values: Vec<&str> = if named.is_some() {
            args[1..].to_vec()
        } else {
            args.clone()
        };
        let Some(index) = self.channel(named) else {
            self.error(-224, "Illegal parameter value");
            return None;
        };
        let on_off = |text: Option<&&str>| match text.map(|t| t.to_ascii_uppercase()).as_deref() {
            Some("ON" | "1") => Some(true),
            Some("OFF" | "0") => Some(false),
            _ => None,
        };
        let fmt = |v: f64| format!("{v:.3}");
        let ch = &self.channels[index];
        match (header.as_str(), query) {
            ("*IDN", true) => Some("RIGOL TECHNOLOGIES,DP832,DP8C000000001,00.01.16".into()),
            ("*CLS", false) => {
                self.errors.clear();
                None
            }
            ("SYST:ERR", true) => Some(match self.errors.pop_front() {
                Some((code, message)) => format!("{code},\"{message}\""),
                None => "0,\"No error\"".into(),
            }),
            ("INST:NSEL", true) => Some((self.selected + 1).to_string()),
            ("INST:NSEL", false) => {
                match args
                    .first()
                    .and_then(|a| a.parse::<usize>().ok())
                    .filter(|n| (1..=3).contains(n))
                {
                    Some(n) => self.selected = n - 1,
                    None => self.error(-224, "Illegal parameter value"),
                }
                None
            }
            ("APPL", true) => Some(format!(
                "CH{}:{}V/{}A,{},{}",
                index + 1,
                format_number(ch.max_volts),
                format_number(ch.max_amps),
                fmt(ch.volts),
                fmt(ch.amps)
            )),
            ("APPL", false) => {
                let volts = values.first().and_then(|v| v.parse::<f64>().ok());
                let amps = values.get(1).and_then(|a| a.parse::<f64>().ok());
                match (volts, amps) {
                    (Some(v), a)
                        if (0.0..=ch.max_volts).contains(&v)
                            && a.is_none_or(|a| (0.0..=ch.max_amps).contains(&a)) =>
                    {
                        let channel = &mut self.channels[index];
                        channel.volts = v;
                        if let Some(a) = a {
                            channel.amps = a;
                        }
                    }
                    (Some(_), _) => self.error(-222, "Data out of range"),
                    (None, _) => self.error(-224, "Illegal parameter value"),
                }
                None
            }
            ("OUTP", true) => Some(if ch.output { "ON" } else { "OFF" }.into()),
            ("OUTP", false) => {
                match on_off(values.first()) {
                    Some(on) => self.channels[index].output = on,
                    None => self.error(-224, "Illegal parameter value"),
                }
                None
            }
            ("MEAS:VOLT", true) => Some(fmt(ch.volts_out())),
            ("MEAS:CURR", true) => Some(fmt(ch.amps_out())),
            ("MEAS:ALL", true) => {
                let (v, a) = (ch.volts_out(), ch.amps_out());
                Some(format!("{},{},{}", fmt(v), fmt(a), fmt(v * a)))
            }
            ("OUTP:OVP:VAL", true) => Some(fmt(ch.ovp)),
            ("OUTP:OCP:VAL", true) => Some(fmt(ch.ocp)),
            ("OUTP:OVP:VAL" | "OUTP:OCP:VAL", false) => {
                let over_volts = header.contains("OVP");
                let max = if over_volts {
                    ch.max_volts * 1.1
                } else {
                    ch.max_amps * 1.1
                };
                match values.first().and_then(|v| v.parse::<f64>().ok()) {
                    Some(v) if (0.0..=max).contains(&v) => {
                        let channel = &mut self.channels[index];
                        if over_volts {
                            channel.ovp = v;
                        } else {
                            channel.ocp = v;
                        }
                    }
                    Some(_) => self.error(-222, "Data out of range"),
                    None => self.error(-224, "Illegal parameter value"),
                }
                None
            }
            ("OUTP:OVP", true) => Some(if ch.ovp_on { "ON" } else { "OFF" }.into()),
            ("OUTP:OCP", true) => Some(if ch.ocp_on { "ON" } else { "OFF" }.into()),
            ("OUTP:OVP" | "OUTP:OCP", false) => {
                match on_off(values.first()) {
                    Some(on) if header.contains("OVP") => self.channels[index].ovp_on = on,
                    Some(on) => self.channels[index].ocp_on = on,
                    None => self.error(-224, "Illegal parameter value"),
                }
                None
            }
            // Constant voltage, constant current, or unregulated (off).
            ("OUTP:MODE", true) => Some(
                match (ch.output, ch.load > ch.amps && ch.load > 0.0) {
                    (false, _) => "UR",
                    (true, true) => "CC",
                    (true, false) => "CV",
                }
                .into(),
            ),
            ("OUTP:OVP:QUES", true) => Some(if ch.ovp_tripped { "YES" } else { "NO" }.into()),
            ("OUTP:OCP:QUES", true) => Some(if ch.ocp_tripped { "YES" } else { "NO" }.into()),
            ("OUTP:OVP:CLE", false) => {
                self.channels[index].ovp_tripped = false;
                None
            }
            ("OUTP:OCP:CLE", false) => {
                self.channels[index].ocp_tripped = false;
                None
            }
            _ => {
                self.error(-113, "Undefined header");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rigol: &mut RigolDp832, lines: &[&str]) -> Vec<String> {
        lines
            .iter()
            .filter_map(|line| rigol.execute(line))
            .collect()
    }

    #[test]
    fn channels_are_independent() {
        let mut r = RigolDp832::new();
        run(
            &mut r,
            &[":APPL CH1,12,1.5", ":APPL CH3,3.3,0.5", ":OUTP CH1,ON"],
        );
        assert_eq!(
            run(
                &mut r,
                &[":APPL? CH1", ":APPL? CH3", ":OUTP? CH1", ":OUTP? CH3"]
            ),
            [
                "CH1:30V/3A,12.000,1.500",
                "CH3:5V/3A,3.300,0.500",
                "ON",
                "OFF"
            ]
        );
        r.set_load(1.0);
        assert_eq!(
            run(&mut r, &[":MEAS:ALL? CH1", ":MEAS:CURR? CH3"]),
            ["12.000,1.000,12.000", "0.000"]
        );
        run(&mut r, &[":APPL CH3,6,1"]);
        assert_eq!(
            run(&mut r, &[":SYST:ERR?", ":APPL? CH3"]),
            ["-222,\"Data out of range\"", "CH3:5V/3A,3.300,0.500"]
        );
        run(&mut r, &[":INST:NSEL 2", ":APPL 7"]);
        assert_eq!(
            run(&mut r, &[":APPL? CH2"]),
            ["CH2:30V/3A,7.000,3.000"],
            "no CH: the selected channel"
        );
        run(&mut r, &[":OUTP CH4,ON"]);
        assert_eq!(
            run(&mut r, &[":SYST:ERR?"]),
            ["-224,\"Illegal parameter value\""]
        );
    }

    #[test]
    fn protections_trip_per_channel() {
        let mut r = RigolDp832::new();
        run(
            &mut r,
            &[
                ":APPL CH2,5,2",
                ":OUTP:OCP:VAL CH2,0.5",
                ":OUTP:OCP CH2,ON",
                ":OUTP CH2,ON",
            ],
        );
        r.set_load(1.0);
        assert_eq!(
            run(
                &mut r,
                &[":OUTP? CH2", ":OUTP:OCP:QUES? CH2", ":OUTP:OVP:QUES? CH2"]
            ),
            ["OFF", "YES", "NO"]
        );
        run(&mut r, &[":OUTP:OCP:CLEAR CH2"]);
        assert_eq!(run(&mut r, &[":OUTP:OCP:QUES? CH2"]), ["NO"]);
        // OVP under the setpoint trips as soon as the output is on.
        run(
            &mut r,
            &[
                ":APPL CH1,12,1",
                ":OUTP:OVP:VAL CH1,10",
                ":OUTP:OVP CH1,ON",
                ":OUTP CH1,ON",
            ],
        );
        assert_eq!(
            run(&mut r, &[":OUTP? CH1", ":OUTP:OVP:QUES? CH1"]),
            ["OFF", "YES"]
        );
    }

    #[test]
    fn modes_follow_the_load() {
        let mut r = RigolDp832::new();
        run(&mut r, &[":APPL CH1,5,1"]);
        assert_eq!(run(&mut r, &[":OUTP:MODE? CH1"]), ["UR"]);
        run(&mut r, &[":OUTP CH1,ON"]);
        assert_eq!(
            run(&mut r, &[":OUTP:MODE? CH1", ":MEAS:ALL? CH1"]),
            ["CV", "5.000,0.000,0.000"]
        );
        r.set_load(2.0);
        assert_eq!(
            run(&mut r, &[":OUTP:MODE? CH1", ":MEAS:ALL? CH1"]),
            ["CC", "2.500,1.000,2.500"],
            "2 A asked of a 1 A limit: CC, power V x I"
        );
    }
}
