//! Tests of the frame-set parser: every syntax and error, Cuebot's chunking cases, and
//! property tests against a naive expansion.
use super::*;
use proptest::prelude::*;

fn frames(spec: &str) -> Vec<i32> {
    FrameSet::parse(spec).unwrap().iter().collect()
}

#[test]
fn parses_every_syntax() {
    #[rustfmt::skip]
    let cases: &[(&str, &[i32])] = &[
        ("5", &[5]), ("-3", &[-3]), ("0007", &[7]), ("1-5", &[1, 2, 3, 4, 5]),
        ("-5--1", &[-5, -4, -3, -2, -1]), ("-2-1", &[-2, -1, 0, 1]), ("6-2", &[6, 5, 4, 3, 2]),
        ("-2--4", &[-2, -3, -4]), ("1-10x3", &[1, 4, 7, 10]), ("10-1x-2", &[10, 8, 6, 4, 2]),
        ("5-5x3", &[5]), ("10-1x1", &[]), ("10-1x-2147483648", &[10]), ("1-5y1", &[]),
        ("1-10y3", &[2, 3, 5, 6, 8, 9]), ("8-1y-2", &[7, 5, 3, 1]), ("1-3,2", &[1, 2, 3, 2]),
        ("1-2,,", &[1, 2]),
        ("1-10:5", &[1, 6, 3, 5, 7, 9, 2, 4, 8, 10]), ("1-8:4", &[1, 5, 3, 7, 2, 4, 6, 8]),
        ("10-1:-5", &[10, 5, 8, 6, 4, 2, 9, 7, 3, 1]),
        (" 1-3 , 7 ,\t9-8 ", &[1, 2, 3, 7, 9, 8]),
        ("2147483640-2147483647x3", &[2147483640, 2147483643, 2147483646]),
        ("-2147483648", &[i32::MIN]),
    ];
    for (spec, want) in cases {
        assert_eq!(&frames(spec), want, "{spec}");
    }
    // Cuebot's FrameSetTests.shouldSplitListAndMaintainOrder.
    let want = [
        57, 1, 2, 3, 4, 3, 2, 12, 14, 76, 73, 70, 6, 7, 9, 10, 12, 1, 6, 3, 5, 7, 2, 4,
    ];
    assert_eq!(frames("57,1-3,4-2,12-15x2,76-70x-3,5-12y3,1-7:5"), want);
}

#[test]
fn errors_say_what_and_where() {
    #[rustfmt::skip]
    let cases = [
        ("", "Syntax", 0, 0), ("1-5,,3", "Syntax", 1, 4), (",1-5", "Syntax", 0, 0),
        ("1-3,  a", "Syntax", 1, 6), ("a-b", "Syntax", 0, 0), ("1-5xc", "Syntax", 0, 0),
        ("1-10-20", "Syntax", 0, 0), ("1x10-20", "Syntax", 0, 0), ("1:10-20", "Syntax", 0, 0),
        ("1-10z2", "Syntax", 0, 0), ("1 - 5", "Syntax", 0, 0), ("+1", "Syntax", 0, 0),
        ("1-5x2 3", "Syntax", 0, 0), ("1-10x0", "ZeroStep", 0, 0), ("1-10:0", "ZeroStep", 0, 0),
        ("1,1-10y0", "ZeroStep", 1, 2), ("10-1x2", "PositiveStepDescending", 0, 0),
        ("10-1:3", "PositiveStepDescending", 0, 0), ("1-10x-2", "NegativeStepAscending", 0, 0),
        ("5-5x-1", "NegativeStepAscending", 0, 0), ("1-10:-2", "NegativeStepAscending", 0, 0),
        ("2147483648", "Overflow", 0, 0), ("1-5x-2147483649", "Overflow", 0, 0),
        ("1-20000000", "TooManyFrames", 0, 0), ("1-30000000y2", "TooManyFrames", 0, 0),
        ("-2147483648-2147483647", "TooManyFrames", 0, 0),
        ("1-5000000, 1-6000000", "TooManyFrames", 1, 11),
        ("1-2000000000:7", "TooManyFrames", 0, 0),
    ];
    for (spec, kind_name, index, offset) in cases {
        let err = FrameSet::parse(spec).unwrap_err();
        let FrameSetError::Section { loc, kind } = &err else {
            panic!("{spec}: {err:?}")
        };
        assert!(
            format!("{kind:?}").starts_with(kind_name),
            "{spec}: {err:?}"
        );
        assert_eq!((loc.index, loc.offset), (index, offset), "{spec}: {err}");
        assert!(
            err.to_string()
                .contains(&format!("`{}` (byte {offset})", loc.section))
        );
    }
    let err = FrameSet::parse("1-3, 4-x").unwrap_err().to_string();
    let want = "unrecognized frame range syntax: expected an end frame at byte 7 in section 1";
    assert_eq!(err, format!("{want} `4-x` (byte 5)"));
    let err = FrameSet::parse(&format!("1-{}", "9".repeat(5000))).unwrap_err();
    let FrameSetError::Section {
        kind: SectionError::Overflow(n, 2),
        ..
    } = &err
    else {
        panic!()
    };
    assert!(n.len() < 70 && err.to_string().len() < 300);
}

#[test]
fn lookups_and_specs() {
    let set = FrameSet::parse("1-7,20-30x5,1-10:5").unwrap();
    assert_eq!(set.len(), 7 + 3 + 10);
    assert_eq!(
        (set.get(4), set.get(8), set.get(19), set.get(20)),
        (Some(5), Some(25), Some(10), None)
    );
    assert_eq!(
        (set.index_of(6), set.index_of(25), set.index_of(22)),
        (Some(5), Some(8), None)
    );
    assert_eq!(set.index_of(9), Some(15)); // inside the interleaved section
    assert!(FrameSet::parse("1-5y1").unwrap().is_empty());
    let big = FrameSet::parse("1-10000000").unwrap();
    assert_eq!(
        (big.len(), big.index_of(9_999_999), big.get(42)),
        (10_000_000, Some(9_999_998), Some(43))
    );
    #[rustfmt::skip]
    let cases = [
        ("1,2,3", "1-3"), ("1-10x1", "1-10"), ("1,5", "1,5"), ("1,5,9,10", "1-9x4,10"),
        ("1-10:5", "1-10:5"), ("10-1x-3", "10-1x-3"), ("1-10y2", "2-10x2"),
        ("1-10y3", "1-10y3"),
        ("1-5y1", EMPTY_SPEC), ("01-010x03", "1-10x3"), ("1-5, 6-10, 11", "1-11"),
        ("-5--1,0,3-2", "-5-0,3-2"),
    ];
    for (spec, want) in cases {
        let set = FrameSet::parse(spec).unwrap();
        assert_eq!(set.to_spec(), want, "{spec}");
        assert_eq!(FrameSet::parse(want).unwrap(), set, "{spec}");
    }
}

#[test]
fn chunks_match_cuebot() {
    #[rustfmt::skip]
    let cases = [
        // Cuebot's FrameSetTests first, then the old Rust scheduler's.
        ("1-10x2,11-100x20,103-108", 5, 5, "11-91x20"),
        ("1-10x2,11-100x20,103-108", 2, 5, "5-11x2,31"),
        ("1-10x2,11-100x20,103-108", 9, 3, "91,103,104"),
        ("1-100x3", 9, 3, "28-34x3"), ("1-100", 9, 3, "10-12"), ("55-60", 0, 10, "55-60"),
        ("1-10", 4, 1, "5"), ("1-10", 4, 3, "5-7"), ("1-10", 7, 5, "8-10"),
        ("-10--1", 5, 3, "-5--3"), ("10-1", 0, 3, "10-8x-1"), ("1-10:5", 0, 4, "1,6,3,5"),
        ("1-3,2", 2, 2, "3,2"),
    ];
    for (spec, idx, size, want) in cases {
        let chunk = FrameSet::parse(spec).unwrap().chunk_at(idx, size).unwrap();
        assert_eq!(chunk.spec, want, "{spec} @{idx} x{size}");
        assert_eq!(frames(&chunk.spec), chunk.frames);
    }
    let set = FrameSet::parse("1-10x2").unwrap();
    assert_eq!(
        (set.chunk(1, 3).unwrap().end, set.chunk(7, 3).unwrap().end),
        (5, 9)
    );
    let c = FrameSet::parse("1").unwrap().chunk(1, 3).unwrap();
    assert_eq!((c.start, c.end, c.spec.as_str()), (1, 1, "1"));
    let big = FrameSet::parse("1-1000000").unwrap();
    let c = big.chunk(999_995, 10).unwrap();
    assert_eq!(
        (c.spec.as_str(), c.start, c.end, c.frames.len()),
        ("999995-1000000", 999_995, 1_000_000, 6)
    );
    assert_eq!(big.chunk(500_000, 10).unwrap().spec, "500000-500009");
    assert_eq!(big.chunk(1, 0), Err(FrameSetError::ZeroChunkSize));
    assert_eq!(big.chunk(0, 5), Err(FrameSetError::FrameNotInSet(0)));
    assert_eq!(
        set.chunk_at(5, 5),
        Err(FrameSetError::IndexOutOfRange(5, 5))
    );
    let tail = FrameSet::parse("1-10:5")
        .unwrap()
        .chunk(7, u32::MAX)
        .unwrap();
    assert_eq!(tail.frames, [7, 9, 2, 4, 8, 10]);
}

#[test]
fn frames_to_spec_follows_cuebot_but_stays_exact() {
    let cases: &[(&[i32], &str)] = &[
        (&[], ""),
        (&[1, 2, 3, 5, 6, 7], "1-3,5-7"),
        (&[1, 3, 5, 10, 11, 12], "1-5x2,10-12"),
        (&[1, 3, 4], "1,3,4"), // Cuebot's quirk (not `1,3-4`) is kept: it is exact
        (&[0, 2, 5, 3], "0,2,5,3"), // Cuebot says `0,2-5,3`: frame 4 extra
        (&[1, 1, 1], "1,1,1"), // Cuebot says `1`
        (&[1, 1, 2], "1,1-2"), // Cuebot says `1-2`
        (&[i32::MIN, 0, i32::MAX], "-2147483648,0,2147483647"),
    ];
    for (input, want) in cases {
        assert_eq!(frames_to_spec(input), *want, "{input:?}");
    }
    assert_eq!(cuebot_frames_to_ranges(&[0, 2, 5, 3]), "0,2-5,3");
}

#[test]
fn frame_numbers_from_names() {
    #[rustfmt::skip]
    let cases = [
        ("0001-render", Some(1)), ("1234-a-b", Some(1234)), ("-005-render", Some(-5)),
        ("-2147483648-x", Some(i32::MIN)), ("render", None), ("-render", None), ("0001", None),
        ("99999999999-x", None), ("--5-x", None),
    ];
    for (name, want) in cases {
        assert_eq!(frame_number_from_name(name), want, "{name}");
    }
    // Cuebot names frames with Java's `%04d`, which pads like Rust's `{:04}` (`-005`).
    for f in [-12345, -5, 0, 7, 12345] {
        assert_eq!(frame_number_from_name(&format!("{f:04}-layer")), Some(f));
    }
}

/// Cuebot's `FrameRange.getIntRange`, literally.
fn java_int_range(start: i32, end: i32, step: i32) -> Vec<i32> {
    let (lo, hi) = if step < 0 { (end, start) } else { (start, end) };
    let keep = |n: &i32| (*n as i64 - start as i64) % (step as i64).abs() == 0;
    let mut v: Vec<i32> = (lo..=hi).filter(keep).collect();
    if step < 0 {
        v.reverse();
    }
    v
}

/// Cuebot's `FrameRange.parseFrameRange` for one section; `None` where Java throws.
fn java_section(a: i32, b: i32, op: char, step: i32) -> Option<Vec<i32>> {
    match op {
        'n' => return Some(vec![a]),
        'r' => return Some(java_int_range(a, b, if b >= a { 1 } else { -1 })),
        _ if step == 0 || (step > 1 && b < a) || (step < 0 && b >= a) => return None,
        _ => {}
    }
    let stepped = java_int_range(a, b, step);
    let mut out = Vec::new();
    match op {
        'x' => out = stepped,
        'y' => out.extend(
            java_int_range(a, b, step.signum())
                .into_iter()
                .filter(|f| !stepped.contains(f)),
        ),
        _ => {
            let mut s = step;
            while s != 0 {
                for f in java_int_range(a, b, s) {
                    if !out.contains(&f) {
                        out.push(f);
                    }
                }
                s /= 2;
            }
        }
    }
    Some(out)
}

/// A spec of 1 to 4 sections, and the frames Cuebot gives it (`None` if Cuebot rejects it).
fn spec_strategy() -> impl Strategy<Value = (String, Option<Vec<i32>>)> {
    let op = prop::sample::select(vec!['n', 'r', 'x', 'y', ':']);
    let sections = prop::collection::vec((-60i32..60, -60i32..60, op, -12i32..12), 1..5);
    let sep = prop::sample::select(vec![",", ", ", " ,\t"]);
    (sections, sep).prop_map(|(sections, sep)| {
        let mut expect = Some(Vec::new());
        let texts: Vec<String> = sections
            .into_iter()
            .map(|(a, b, op, step)| {
                let frames = java_section(a, b, op, step);
                expect = expect.take().zip(frames).map(|(e, f)| [e, f].concat());
                match op {
                    'n' => format!("{a}"),
                    'r' => format!("{a}-{b}"),
                    _ => format!("{a}-{b}{op}{step}"),
                }
            })
            .collect();
        (texts.join(sep), expect)
    })
}

proptest! {
    #[test]
    fn parse_never_panics_on_anything(s in ".*") {
        let _ = FrameSet::parse(&s);
    }

    #[test]
    fn parse_never_panics_near_the_grammar(s in "[-0-9x y:,]{0,40}") {
        if let Ok(set) = FrameSet::parse(&s) {
            prop_assert_eq!(FrameSet::parse(&set.to_spec()).unwrap(), set);
        }
    }

    #[test]
    fn big_numbers_never_panic(s in "-?[0-9]{1,12}(--?[0-9]{1,12}([xy:]-?[0-9]+)?)?") {
        prop_assert!(FrameSet::parse(&s).map_or(true, |set| set.len() <= MAX_FRAMES));
    }

    #[test]
    fn parse_matches_cuebot_and_round_trips((spec, expect) in spec_strategy()) {
        match (FrameSet::parse(&spec), expect) {
            (Ok(set), Some(want)) => {
                prop_assert_eq!(set.iter().collect::<Vec<_>>(), want.clone());
                prop_assert_eq!(frames(&set.to_spec()), want.clone());
                for (i, f) in want.iter().enumerate() {
                    prop_assert_eq!(set.get(i), Some(*f));
                    prop_assert_eq!(set.index_of(*f), want.iter().position(|g| g == f));
                }
                prop_assert_eq!(set.get(want.len()), None);
            }
            (Err(_), None) => {}
            (got, want) => prop_assert!(false, "{spec}: got {got:?}, Cuebot {want:?}"),
        }
    }

    #[test]
    fn chunks_agree_with_naive_expansion(
        (spec, expect) in spec_strategy(),
        pick in any::<prop::sample::Index>(),
        size in 1u32..25,
    ) {
        let Some(all) = expect.filter(|v| !v.is_empty()) else { return Ok(()) };
        let frame = all[pick.index(all.len())];
        let first = all.iter().position(|f| *f == frame).unwrap();
        let want = &all[first..all.len().min(first + size as usize)];
        let chunk = FrameSet::parse(&spec).unwrap().chunk(frame, size).unwrap();
        prop_assert_eq!(&chunk.frames[..], want);
        prop_assert_eq!((chunk.start, chunk.end), (frame, *want.last().unwrap()));
        prop_assert_eq!(frames(&chunk.spec), want.to_vec());
    }

    #[test]
    fn frames_to_spec_is_exact(
        small in prop::collection::vec(-20i32..20, 1..30),
        wide in prop::collection::vec(any::<i32>(), 1..8),
    ) {
        for input in [small, wide] {
            prop_assert_eq!(frames(&frames_to_spec(&input)), input);
        }
    }

    #[test]
    fn big_stepped_ranges_chunk_arithmetically(
        a in -1_000_000i32..1_000_000,
        n in 1i32..3_000_000,
        step in 1i32..50,
        pick in any::<prop::sample::Index>(),
    ) {
        let set = FrameSet::parse(&format!("{a}-{}x{step}", a + n)).unwrap();
        let idx = pick.index(set.len());
        let frame = a + idx as i32 * step;
        prop_assert_eq!(set.index_of(frame), Some(idx));
        let idxs = idx..set.len().min(idx + 10);
        let want: Vec<i32> = idxs.map(|k| a + k as i32 * step).collect();
        let chunk = set.chunk(frame, 10).unwrap();
        prop_assert_eq!(frames(&chunk.spec), want.clone());
        prop_assert_eq!(chunk.frames, want);
    }
}

/// Frames the set holds one by one in memory (the rest are stored as arithmetic).
fn stored_frames(set: &FrameSet) -> usize {
    set.sections
        .iter()
        .map(|s| match s {
            Section::Interleave(il) => il.order.len(),
            Section::Arith(..) | Section::Fill(_) => 0,
        })
        .sum()
}

/// The error parsing `spec` gives; panics (without printing a possibly huge set) if none.
fn parse_err(spec: &str) -> FrameSetError {
    match FrameSet::parse(spec) {
        Ok(set) => panic!("{}…: parsed into {} frames", clip(spec), set.len()),
        Err(e) => e,
    }
}

#[test]
fn huge_fills_are_arithmetic_not_lists() {
    // `y` over a huge span: nothing is expanded, whatever the span, and lookups are O(1).
    for spec in [
        "1-100000000y1",
        "-2147483648-2147483647y1",
        "100000000-1y-1",
    ] {
        let set = FrameSet::parse(spec).unwrap();
        assert!(set.is_empty() && set.sections.is_empty(), "{spec}");
    }
    let set = FrameSet::parse("1-15000000y3").unwrap();
    assert_eq!((set.len(), set.sections.len()), (10_000_000, 1));
    assert_eq!(stored_frames(&set), 0, "a fill is complement arithmetic");
    assert_eq!(
        (set.get(0), set.get(1), set.get(2), set.get(9_999_999)),
        (Some(2), Some(3), Some(5), Some(15_000_000))
    );
    assert_eq!(set.index_of(15_000_000), Some(9_999_999));
    assert_eq!((set.index_of(14_999_998), set.index_of(1)), (None, None));
    assert_eq!(
        set.chunk(14_999_996, 4).unwrap().spec,
        "14999996-14999997,14999999-15000000"
    );
    // Counting down to the edge of i32: offset 1000 is stepped over, the last one is kept.
    let set = FrameSet::parse("2147483647-2137483648y-1000").unwrap();
    assert_eq!((set.len(), stored_frames(&set)), (9_990_000, 0));
    assert_eq!(set.index_of(2147482647), None);
    assert_eq!(set.index_of(2137483648), Some(9_989_999));
    assert_eq!(set.to_spec(), "2147483647-2137483648y-1000");
    // Above the frame limit it is an error, still without expanding anything.
    let err = parse_err("2147483647--2147483648y-7");
    assert!(err.to_string().contains("exceed 10000000 frames"), "{err}");
    let set = FrameSet::parse("1-100000000x10").unwrap();
    assert_eq!(
        (set.len(), set.sections.len(), stored_frames(&set)),
        (10_000_000, 1, 0)
    );
}

#[test]
fn interleaves_are_bounded_by_their_span() {
    // An interleave is the one form held frame by frame, so its span has its own limit.
    let set = FrameSet::parse("1-1000000:3").unwrap();
    assert_eq!(set.len(), 1_000_000);
    assert_eq!(stored_frames(&set), MAX_INTERLEAVED_FRAMES);
    assert_eq!(
        (set.get(0), set.get(1), set.index_of(2)),
        (Some(1), Some(4), Some(333_334))
    );
    let err = parse_err("5, 1-1000001:3");
    let FrameSetError::Section { loc, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(loc.index, 1);
    assert_eq!(
        err,
        FrameSetError::Section {
            loc: loc.clone(),
            kind: SectionError::InterleaveTooLong(MAX_INTERLEAVED_FRAMES)
        }
    );
    assert!(err.to_string().contains("interleaved"), "{err}");
    // Step 1 is a plain range: no span limit, nothing stored.
    let set = FrameSet::parse("1-5000000:1").unwrap();
    assert_eq!((set.len(), stored_frames(&set)), (5_000_000, 0));
}

#[test]
fn the_number_of_sections_is_bounded() {
    // Lookups walk the sections, so their number is limited (a 4000-character
    // `layer.str_range` holds at most 2000).
    let ok = vec!["1"; 10_000].join(",");
    assert_eq!(FrameSet::parse(&ok).unwrap().len(), 10_000);
    let err = parse_err(&format!("{ok},1"));
    let FrameSetError::Section { loc, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!((loc.index, MAX_SECTIONS), (10_000, 10_000));
    assert_eq!(
        err,
        FrameSetError::Section {
            loc: loc.clone(),
            kind: SectionError::TooManySections(MAX_SECTIONS)
        }
    );
    // Runs that continue each other merge into one section and do not count separately.
    let runs: Vec<String> = (0..20_000).map(|i| i.to_string()).collect();
    assert_eq!(FrameSet::parse(&runs.join(",")).unwrap().sections.len(), 1);
}

#[test]
fn fills_follow_cuebot() {
    #[rustfmt::skip]
    let cases: &[(&str, &[i32])] = &[
        ("1-8y2", &[2, 4, 6, 8]), ("8-1y-2", &[7, 5, 3, 1]), ("10-1y-3", &[9, 8, 6, 5, 3, 2]),
        ("1-10y1", &[]), ("10-1y1", &[]), ("5-5y2", &[]), ("1-4y3", &[2, 3]),
        ("1-11y3", &[2, 3, 5, 6, 8, 9, 11]), ("-5-5y4", &[-4, -3, -2, 0, 1, 2, 4, 5]),
        ("1-3y2147483647", &[2, 3]), ("3-1y-2147483648", &[2, 1]),
    ];
    for (spec, want) in cases {
        assert_eq!(&frames(spec), want, "{spec}");
        let set = FrameSet::parse(spec).unwrap();
        for (i, f) in want.iter().enumerate() {
            assert_eq!(
                (set.get(i), set.index_of(*f)),
                (Some(*f), Some(i)),
                "{spec}"
            );
        }
        assert_eq!(frames(&set.to_spec()), *want, "{spec}");
    }
    for (spec, kind) in [
        ("1-10y-3", "NegativeStepAscending"),
        ("10-1y3", "PositiveStepDescending"),
        ("5-5y-2", "NegativeStepAscending"),
        ("1-10y0", "ZeroStep"),
    ] {
        let err = parse_err(spec);
        assert!(format!("{err:?}").contains(kind), "{spec}: {err:?}");
    }
}

/// Cuebot's `y` for one section, with a hash set so that large spans stay cheap to check.
fn java_fill(a: i32, b: i32, step: i32) -> Vec<i32> {
    let stepped: std::collections::HashSet<i32> = java_int_range(a, b, step).into_iter().collect();
    let full = java_int_range(a, b, step.signum());
    full.into_iter().filter(|f| !stepped.contains(f)).collect()
}

proptest! {
    #[test]
    fn fills_agree_with_cuebot_at_scale(
        a in -100_000i32..100_000,
        span in 0i32..20_000,
        step in 2i32..60,
        down in any::<bool>(),
        picks in prop::collection::vec(any::<prop::sample::Index>(), 1..20),
    ) {
        // Counting down needs the end below the start (`5-5y-2` is an error, as in Cuebot).
        let (b, step) = if down { (a - span - 1, -step) } else { (a + span, step) };
        let want = java_fill(a, b, step);
        let set = FrameSet::parse(&format!("{a}-{b}y{step}")).unwrap();
        prop_assert_eq!(stored_frames(&set), 0);
        prop_assert_eq!(set.len(), want.len());
        prop_assert!(set.iter().eq(want.iter().copied()));
        for pick in picks.iter().filter(|_| !want.is_empty()) {
            let i = pick.index(want.len());
            prop_assert_eq!(set.get(i), Some(want[i]));
            prop_assert_eq!(set.index_of(want[i]), Some(i));
        }
        // Frames of the range that the fill leaves out, and frames outside it, are not in it.
        for f in java_int_range(a, b, step).into_iter().take(50).chain([a - 1, b + 1]) {
            prop_assert_eq!(set.index_of(f), want.iter().position(|g| *g == f));
        }
    }
}
