//! Unit tests of `top`'s view: the sort orders, the three kinds of filter, and the keys (sort, filter prompt, freeze, pane, quit).

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::*;
use crate::top::fixture::{sample, set};

fn key(c: KeyCode) -> KeyEvent {
    KeyEvent::new(c, KeyModifiers::NONE)
}

fn ids(s: &Sample) -> Vec<u32> {
    s.nexthops.iter().map(|n| n.id).collect()
}

#[test]
fn sorting_by_rate_puts_the_busiest_first_and_by_id_in_order() {
    let s = sample();
    let mut v = View::new(SortBy::Pps, None);
    // Next hop 3's rate is unknown (a reset): it sorts as zero.
    assert_eq!(ids(&v.shown(&s)), [2, 1, 3]);
    let groups: Vec<u32> = v.shown(&s).groups.iter().map(|g| g.id).collect();
    assert_eq!(groups, [7, 9]);
    v.sort = SortBy::Id;
    assert_eq!(ids(&v.shown(&s)), [1, 2, 3]);
    v.sort = SortBy::Bps;
    let ports: Vec<String> = v.shown(&s).ports.into_iter().map(|p| p.dev).collect();
    assert_eq!(ports, ["xe-o1", "xe-o0"]);
}

#[test]
fn a_prefix_selects_the_routes_inside_it() {
    let mut s = sample();
    Filter::parse("10.9.0.0/16").unwrap().apply(&mut s);
    assert_eq!(set(s.groups.iter().map(|g| g.id)), set([7, 9]));
    let mut s = sample();
    Filter::parse("172.16.0.0/12").unwrap().apply(&mut s);
    assert_eq!(set(s.groups.iter().map(|g| g.id)), set([7]));
    assert_eq!(set(ids(&s)), set([1, 2]));
    // The verdicts are not per route: they stay.
    assert_eq!(s.verdicts.len(), sample().verdicts.len());
    let mut s = sample();
    Filter::parse("192.168.0.0/16").unwrap().apply(&mut s);
    assert!(s.groups.is_empty() && s.nexthops.is_empty() && s.ports.is_empty());
}

#[test]
fn an_address_selects_the_route_it_takes() {
    // 10.9.1.5 is in 10.9.0.0/16 (group 9) and 10.9.1.0/24 (group 7): the longer wins.
    let mut s = sample();
    Filter::parse("10.9.1.5").unwrap().apply(&mut s);
    assert_eq!(set(s.groups.iter().map(|g| g.id)), set([7]));
    let mut s = sample();
    Filter::parse("10.9.2.5").unwrap().apply(&mut s);
    assert_eq!(set(s.groups.iter().map(|g| g.id)), set([9]));
    assert_eq!(set(ids(&s)), set([2, 3]));
    assert_eq!(s.ports.len(), 1);
}

#[test]
fn a_port_selects_its_next_hops_exactly_or_by_part_of_its_name() {
    let mut s = sample();
    Filter::parse("xe-o0").unwrap().apply(&mut s);
    assert_eq!(ids(&s), [1]);
    assert_eq!(set(s.groups.iter().map(|g| g.id)), set([7]));
    let mut s = sample();
    Filter::parse("o1").unwrap().apply(&mut s);
    assert_eq!(set(ids(&s)), set([2, 3]));
    assert_eq!(set(s.groups.iter().map(|g| g.id)), set([7, 9]));
    let mut s = sample();
    Filter::parse("xe-o").unwrap().apply(&mut s);
    assert_eq!(s.ports.len(), 2);
}

#[test]
fn a_filter_that_is_not_a_prefix_says_why() {
    let e = Filter::parse("10.0.0.1/8").unwrap_err();
    assert!(format!("{e:#}").contains("bits set"), "{e:#}");
    assert!(Filter::parse("  ").is_err());
    assert!(matches!(
        Filter::parse("2001:db8::/32"),
        Ok(Filter::Prefix(_))
    ));
    assert!(matches!(Filter::parse("eth0.100"), Ok(Filter::Port(_))));
}

#[test]
fn keys_sort_filter_freeze_switch_panes_and_quit() {
    let mut v = View::new(SortBy::Pps, None);
    assert_eq!(v.key(key(KeyCode::Char('s'))), Action::Redraw);
    assert_eq!(v.sort, SortBy::Bps);
    v.key(key(KeyCode::Char('s')));
    v.key(key(KeyCode::Char('s')));
    assert_eq!(v.sort, SortBy::Pps);

    v.key(key(KeyCode::Char(' ')));
    assert!(v.frozen);
    v.key(key(KeyCode::Char('f')));
    assert!(!v.frozen);

    v.key(key(KeyCode::Tab));
    assert_eq!(v.pane, Pane::Nexthops);
    v.key(key(KeyCode::BackTab));
    v.key(key(KeyCode::BackTab));
    assert_eq!(v.pane, Pane::Verdicts);

    // The prompt takes every key, q included, until Enter or Esc.
    v.key(key(KeyCode::Char('/')));
    for c in "xe-oq".chars() {
        assert_eq!(v.key(key(KeyCode::Char(c))), Action::Redraw);
    }
    v.key(key(KeyCode::Backspace));
    v.key(key(KeyCode::Enter));
    assert_eq!(v.prompt, None);
    assert_eq!(v.filter.as_ref().map(|f| f.0.as_str()), Some("xe-o"));
    // A bad filter keeps the prompt open and says why; Esc clears.
    v.key(key(KeyCode::Char('/')));
    for c in "10.0.0.1/8".chars() {
        v.key(key(KeyCode::Char(c)));
    }
    v.key(key(KeyCode::Enter));
    assert!(v.prompt.is_some() && v.error.is_some());
    v.key(key(KeyCode::Esc));
    assert_eq!((v.prompt.clone(), v.filter.clone()), (None, None));

    assert_eq!(v.key(key(KeyCode::Char('q'))), Action::Quit);
    assert_eq!(v.key(key(KeyCode::Esc)), Action::Quit);
    let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
    assert_eq!(v.key(ctrl_c), Action::Quit);
}
