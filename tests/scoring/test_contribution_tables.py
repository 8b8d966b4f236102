"""Hand-computed checks of the lookup tables the reasons are read from (`ColumnBins`, `_delta_tables`)."""

from __future__ import annotations

import numpy as np

from scoring.compiled.contributions import _delta_tables
from scoring.compiled.trees import ColumnBins, LeafTables, Splits, code_dtype

NAN = float("nan")


def toy_splits() -> Splits:
    # Tree 0: s0 reads column 0 at 1.0 (missing goes right), bit 0; s1 reads column 1 at 5.0 (missing goes left),
    # bit 1. Tree 1: s2 reads column 0 at 3.0 (missing goes left), bit 0.
    return Splits(column=np.array([0, 1, 0]), threshold=np.array([1.0, 5.0, 3.0]),
                  missing_left=np.array([False, True, True]), cat_row=np.zeros(3, np.int64),
                  weight=np.array([1, 2, 1]), tree=np.array([0, 0, 1]))


def test_column_bins_give_each_row_the_code_bits_of_its_splits() -> None:
    splits = toy_splits()
    cat_table = np.zeros((1, 257), dtype=bool)
    bins = ColumnBins(splits, 2, np.array([False, False]), cat_table)
    XT = np.array([[0.5, 2.0, 7.0, NAN, 1.0],
                   [5.0, 6.0, NAN, 4.0, 9.0]])
    # Column 0, thresholds [1, 3]: bin 0 (<= 1) -> s0 and s2 left = [1, 1]; bin 1 -> s2 = [0, 1]; bin 2 -> [0, 0];
    # missing -> s2 only (s0 sends it right) = [0, 1]. Column 1, threshold [5]: <= 5 or missing -> [2, 0].
    # Rows: [1,1]+[2,0] = [3,1]; [0,1]+[0,0] = [0,1]; [0,0]+[2,0] = [2,0]; [0,1]+[2,0] = [2,1]; 1.0 <= 1: [1,1]+[0,0].
    expected = np.array([[3, 1], [0, 1], [2, 0], [2, 1], [1, 1]])
    assert bins.trees.tolist() == [0, 1]
    assert bins.bits(XT).tolist() == expected.tolist()
    assert splits.codes(XT, cat_table).T.tolist() == expected.tolist()  # what the split-by-split codes give


def test_column_bins_read_categories_from_the_decision_table() -> None:
    # One categorical split (row 1 of the table): codes 2 and 5 go left, missing/unknown (column 256) too.
    cat_table = np.zeros((2, 257), dtype=bool)
    cat_table[1, [2, 5, 256]] = True
    splits = Splits(column=np.array([0]), threshold=np.array([0.0]), missing_left=np.array([True]),
                    cat_row=np.array([1]), weight=np.array([4]), tree=np.array([3]))
    bins = ColumnBins(splits, 1, np.array([True]), cat_table)
    XT = np.array([[2.0, 3.0, 5.0, NAN, -1.0, 300.0]])
    # left (weight 4) for 2, 5, missing, negative and too large; right for 3.
    assert bins.bits(XT)[:, 0].tolist() == [4, 0, 4, 4, 4, 4]
    assert splits.codes(XT, cat_table)[0].tolist() == [4, 0, 4, 4, 4, 4]


def test_delta_tables_hold_each_trees_change_when_a_field_goes_neutral() -> None:
    # Leaf values by code, stride 4: tree 0 [0.1, 0.2, 0.3, 0.4], tree 1 [-0.5, 0.5, -0.5, 0.5].
    tables = LeafTables(toy_splits(), np.array([0.1, 0.2, 0.3, 0.4, -0.5, 0.5, -0.5, 0.5]), np.array([0, 4]))
    field = toy_splits().subset(np.array([True, False, True]))  # the field owns column 0: s0 and s2
    keep = ~np.add.reduceat(field.weight, field.starts)  # bit 0 is the field's in both trees: keep = ~1
    bits = np.array([[0], [1]])  # its neutral value 2.0: right at s0 (1.0), left at s2 (3.0)
    table, shift = _delta_tables(tables, field, keep, bits)
    # Tree 0: leaf(c) - leaf(c with bit 0 cleared): [0.1-0.1, 0.2-0.1, 0.3-0.3, 0.4-0.3] = [0, 0.1, 0, 0.1].
    # Tree 1: leaf(c) - leaf(c with bit 0 set): [-0.5-0.5, 0.5-0.5, -0.5-0.5, 0.5-0.5] = [-1, 0, -1, 0].
    assert np.allclose(table, [0, 0.1, 0, 0.1, -1, 0, -1, 0])
    assert shift.tolist() == [0, 0]  # tree i's entries start at i * 4, as its leaves do
    # A lead left at s0 (tree 0 code 1) and right at s2 (tree 1 code 0, offset 4): leaves 0.2 + -0.5 = -0.3;
    # with the field neutral: 0.1 + 0.5 = 0.6; change -0.9 = table[1 + 0] + table[4 + 0].
    coded = np.array([1, 4])
    assert np.isclose(table[coded + shift].sum(), -0.9)


def test_codes_take_the_narrowest_integer_their_tables_need() -> None:
    # int16 holds offsets codes up to 32,767: 60 trees of 2**9 entries (30,720) fit; 64 trees (32,768) do not.
    assert code_dtype(60 * 2**9) is np.int16
    assert code_dtype(64 * 2**9) is np.int32
